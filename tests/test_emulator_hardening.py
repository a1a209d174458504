"""The emulator under malformed input (issue 10, items 15 and 18), over real loopback HTTP.

Every malformed request gets a JSON error and the connection keeps working; identifiers match
completely; `emulator serve` with a busy port or a bad file says so in one line and exits 1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator, agent_props, basic_headers
from .test_emulator import add_body, call, join

H = basic_headers()


def raw_exchange(emu: Emulator, request: bytes) -> tuple[int, dict[str, Any], bytes]:
    """Send raw bytes, read one HTTP answer: (status, JSON body, the rest of the head)."""
    host, port = emu.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the connection was dropped without an answer: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk
            body += chunk
    status = int(head.split(b" ")[1])
    return status, json.loads(body), head


def auth() -> bytes:
    return f"Authorization: {H['Authorization']}\r\n".encode()


# --------------------------------------------------------------------------- malformed bodies
@pytest.mark.parametrize(
    ("path", "key"),
    [("phone-numbers", "error_type"), ("projects/app1/join", "reason")],
)
@pytest.mark.parametrize("body", [b"{nope", b'{"label": "\xff\xfe"}', b"[" * 100000 + b"]" * 100000, b"\x00"])
def test_invalid_json_or_utf8_is_a_400_in_the_endpoints_shape(emu: Emulator, path: str, key: str, body: bytes) -> None:
    response = emu.session.post(f"{emu.api}/v2/{path}", data=body, headers={**H, "Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert response.json()[key] in ("invalid_request_body", "InvalidRequestBody")
    assert call(emu, "GET", "phone-numbers").status_code == 200, "the server still answers"


@pytest.mark.parametrize(
    "body",
    [
        add_body(label=7),
        add_body(inbound="yes"),
        add_body(provider=["byo"]),
        add_body(phone_number=14155550100),
        add_body(inbound_config=[]),
    ],
)
def test_wrong_types_in_a_phone_number_are_refused(emu: Emulator, body: dict[str, Any]) -> None:
    response = call(emu, "POST", "phone-numbers", body)
    assert response.status_code in (400, 422) and response.json()["error_type"]
    assert call(emu, "GET", "phone-numbers").json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": ["x"], "preset": "p", "properties": agent_props("c")},
        {"name": "x", "preset": 5, "properties": agent_props("c")},
        {"name": "x", "preset": "p", "properties": {**agent_props("c"), "token": 12}},
        {"name": "x", "preset": "p", "properties": {**agent_props("c"), "agent_rtc_uid": {"a": 1}}},
        {"name": "x", "preset": "p", "properties": {**agent_props("c"), "channel": ["c"]}},
        {"name": "x", "preset": "p", "properties": {**agent_props("c"), "idle_timeout": "30"}},
        ["not", "an", "object"],
    ],
)
def test_wrong_types_in_a_join_are_refused(emu: Emulator, body: Any) -> None:
    response = call(emu, "POST", "projects/app1/join", body)
    assert response.status_code == 400 and response.json()["reason"] and response.json()["detail"]


# --------------------------------------------------------------------------- identifiers match completely
@pytest.mark.parametrize("phone", ["+14155550100\n", "+14155550100 ", " +14155550100", "+1415555010\u0660"])
def test_phone_numbers_must_match_completely(emu: Emulator, phone: str) -> None:
    response = call(emu, "POST", "phone-numbers", add_body(phone))
    assert (response.status_code, response.json()["error_type"]) == (400, "invalid_phone_format")
    assert call(emu, "GET", "phone-numbers").json() == []


def test_call_numbers_must_match_completely(emu: Emulator) -> None:
    call(emu, "POST", "phone-numbers", add_body())
    sip = {"to_number": "+14155559999\n", "from_number": "+14155550100", "rtc_uid": "9", "rtc_token": "t"}
    response = call(emu, "POST", "projects/app1/call", {"name": "c", "sip": sip, "properties": agent_props("r")})
    assert (response.status_code, response.json()["error_type"]) == (400, "invalid_phone_format")


@pytest.mark.parametrize(
    ("name", "props"),
    [
        ("agent\n", {}),
        ("agent\r", {}),
        ("a" * 256, {}),
        ("ok", {"channel": "room\n"}),
        ("ok", {"channel": "x" * 65}),
        ("ok", {"channel": "room/1"}),
        ("ok", {"uid": "1001\n"}),
    ],
)
def test_agent_identifiers_must_match_completely(emu: Emulator, name: str, props: dict[str, Any]) -> None:
    response = join(emu, name, **props)
    assert (response.status_code, response.json()["reason"]) == (400, "InvalidFieldValue")
    assert emu.agents("app1") == []


def test_path_identifiers_match_exactly(emu: Emulator) -> None:
    call(emu, "POST", "phone-numbers", add_body())
    assert call(emu, "GET", "phone-numbers/%2B14155550100%0A").status_code == 404
    agent_id = join(emu, "a").json()["agent_id"]
    assert call(emu, "GET", f"projects/app1/agents/{agent_id}%0A").status_code == 404


# --------------------------------------------------------------------------- admin values
@pytest.mark.parametrize(
    ("route", "doc"),
    [
        ("faults", {"path": "(unclosed"}),
        ("faults", {"path": "*"}),
        ("faults", {"status": "503"}),
        ("faults", {"status": 99}),
        ("faults", {"count": -1}),
        ("faults", {"count": 1.5}),
        ("faults", {"rate": 2, "status": 503}),
        ("faults", {"latency_ms": "fast"}),
        ("faults", {"latency_ms": -5}),
        ("faults", {"method": 1}),
        ("faults", {"drop": "yes"}),
        ("faults", {"retry_after": "soon"}),
        ("faults", [{"status": 503}, {"path": "("}]),
        ("faults", "oops"),
        ("faults", {"nope": 1}),
        ("faults", {"hold": "yes"}),
        ("faults", {"hold": True, "status": 503}),
        ("faults", {"hold": True, "drop": True}),
        ("clock", {"advance_s": "ten"}),
        ("clock", {"advance_s": -10}),
        ("clock", {"advance": 10}),
        ("clock", [10]),
        ("config", {"stop_delay_s": "slow"}),
        ("config", {"stop_delay_s": True}),
        ("config", {"retention_s": -1}),
        ("config", {"name_reuse": "sometimes"}),
        ("config", {"app_certificate": 5}),
        ("config", {"unknown_setting": 1}),
        ("config", [1]),
        ("seed", {"agents": [{"name": "x", "preset": "p", "properties": agent_props("c")}]}),
        ("seed", {"agents": [{"app_id": "a", "name": "x", "preset": "p", "properties": agent_props("c"), "start_ts": "now"}]}),
        ("seed", {"agents": {"app_id": "a"}}),
        ("seed", {"pipelines": [{"pipeline_name": "no id"}]}),
        ("seed", {"pipelines": ["pl_x"]}),
        ("seed", {"phone_numbers": [{"phone_number": "+14155550100"}]}),
        ("seed", {"phone_numbers": [{**add_body(), "inbound_config": {"pipeline_id": ["x"]}}]}),
        ("seed", {"numbers": []}),
        ("seed", []),
    ],
)
def test_bad_admin_values_are_400_json_and_change_nothing(emu: Emulator, route: str, doc: Any) -> None:
    before = (emu.admin("GET", "config"), emu.admin("GET", "clock")["now"])
    response = emu.session.post(f"{emu.url}/_emulator/{route}", json=doc, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error_type"] and response.json()["description"]
    config, now = emu.admin("GET", "config"), emu.admin("GET", "clock")["now"]
    assert config == before[0] and now - before[1] < 60
    assert call(emu, "GET", "phone-numbers").json() == [] and emu.agents("a") == []
    assert call(emu, "GET", "phone-numbers").status_code == 200, "no fault was installed"


def test_seed_is_all_or_nothing(emu: Emulator) -> None:
    good = add_body("+14155550100")
    bad = {"agents": [{"app_id": "a", "name": "x", "preset": "p", "properties": {"channel": "c"}}], "phone_numbers": [good]}
    response = emu.session.post(f"{emu.url}/_emulator/seed", json=bad, timeout=10)
    assert response.status_code == 400
    assert call(emu, "GET", "phone-numbers").json() == []


def test_admin_invalid_json_and_unknown_route(emu: Emulator) -> None:
    for body in (b"{", b"\xff"):
        response = emu.session.post(f"{emu.url}/_emulator/faults", data=body, timeout=10)
        assert response.status_code == 400 and response.json()["error_type"] == "invalid_request_body"
    assert emu.session.post(f"{emu.url}/_emulator/nowhere", timeout=10).status_code == 404


# --------------------------------------------------------------------------- the HTTP layer
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
        b"POST /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/9.9\r\n\r\n",
        b"OPTIONS /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_unreadable_requests_get_a_json_error(emu: Emulator, request_bytes: bytes) -> None:
    status, body, _ = raw_exchange(emu, request_bytes)
    assert 400 <= status < 600 and body["detail"]
    assert call(emu, "GET", "phone-numbers").status_code == 200


def test_short_body_gets_a_json_error(emu: Emulator) -> None:
    host, port = emu.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\n" + auth() + b"Content-Length: 50\r\n\r\n{}"
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b'"detail"' in answer


def test_chunked_bodies_are_read(emu: Emulator) -> None:
    body = json.dumps(add_body()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    request = (
        b"POST /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\n"
        + auth()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
    )
    status, doc, _ = raw_exchange(emu, request)
    assert status == 201 and doc["phone_number"] == "+14155550100"


# --------------------------------------------------------------------------- the serve command
def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `Error:` line of a run that failed cleanly (exit 1, nothing on stdout, no traceback)."""
    assert result.returncode == 1 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("emulator: no credentials")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_serve_on_a_busy_port_is_one_clear_line(emu: Emulator) -> None:
    port = emu.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"127.0.0.1:{port}" in the_error_line(result)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"agents": [{"name": "x", "preset": "p", "properties": {}}]}', "app_id"),
        (b"[1, 2]", "JSON object"),
    ],
)
def test_serve_with_a_bad_seed_is_one_clear_line(tmp_path: Path, content: bytes | None, needle: str) -> None:
    seed = tmp_path / "seed.json"
    if content is not None:
        seed.write_bytes(content)
    line = the_error_line(serve("--seed", str(seed)))
    assert str(seed) in line and needle in line, line


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"{not json", "not valid JSON"), (b"[]", "not an emulator data file"), (b'{"agents": [{"x": 1}]}', "not an emulator data file")],
)
def test_serve_with_a_bad_data_file_is_one_clear_line(tmp_path: Path, content: bytes, needle: str) -> None:
    data = tmp_path / "store.json"
    data.write_bytes(content)
    line = the_error_line(serve("--data", str(data)))
    assert str(data) in line and needle in line, line
    assert data.read_bytes() == content, "the file is left as it was"


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_silences_client_disconnects(quiet: bool) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", *(["-q"] if quiet else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        session = requests.Session()
        assert session.post(f"{url}/_emulator/faults", json={"latency_ms": 100}, timeout=10).status_code == 200
        host, port = url.removeprefix("http://").split(":")
        for _ in range(3):  # ask, then hang up: the request is read in full, the answer finds the socket closed
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(b"GET /api/conversational-ai-agent/v2/phone-numbers HTTP/1.1\r\nHost: x\r\n" + auth() + b"\r\n")
        gone: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while len(gone) < 3 and time.monotonic() < deadline:  # bounded wait for an event, not a timed verdict
            gone = [r for r in session.get(f"{url}/_emulator/requests", timeout=10).json()["requests"] if r.get("client_gone")]
        assert len(gone) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0 and "Traceback" not in stderr
    assert stderr.count("went away") == (0 if quiet else 3), stderr
