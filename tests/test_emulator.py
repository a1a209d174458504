"""The emulator over real loopback HTTP: every endpoint, every error code, lifecycle, admin API."""

from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from reconciler.emulator import EmulatorAdapter, EmulatorApp, Store
from reconciler.emulator.app import Request

from .conftest import Emulator, agent_props, basic_headers, number, start_emulator

H = basic_headers()


def call(emu: Emulator, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
    return emu.session.request(method, f"{emu.api}/v2/{path}", json=body, headers=headers if headers is not None else H, timeout=30, **kw)


def add_body(phone: str = "+14155550100", **extra: Any) -> dict[str, Any]:
    return {
        "provider": "byo",
        "phone_number": phone,
        "label": "Sales",
        "inbound_config": {"allowed_addresses": ["10.0.0.0/8"]},
        "outbound_config": {"address": "alice:pw-Secret-123@sip.example.com", "transport": "tls", "prefix": "9"},
        **extra,
    }


def join(emu: Emulator, name: str, app: str = "app1", **props: Any) -> requests.Response:
    return call(
        emu,
        "POST",
        f"projects/{app}/join",
        {"name": name, "preset": "p1", "properties": agent_props(props.pop("channel", "room"), **props)},
    )


# --------------------------------------------------------------------------- phone numbers
def test_phone_number_lifecycle(emu: Emulator) -> None:
    created = call(emu, "POST", "phone-numbers", add_body())
    assert created.status_code == 201
    assert created.json()["associated_pipeline"] is None
    listed = call(emu, "GET", "phone-numbers")
    assert listed.status_code == 200 and isinstance(listed.json(), list) and len(listed.json()) == 1
    got = call(emu, "GET", "phone-numbers/+14155550100")
    assert got.json()["outbound_config"]["address"] == "alice@sip.example.com", "SIP passwords are write-only"
    assert "password" not in json.dumps(got.json()) and "pw-Secret-123" not in got.text
    patched = call(emu, "PATCH", "phone-numbers/+14155550100", {"inbound_config": {"pipeline_id": "pl_demo_sales"}})
    assert patched.status_code == 200
    assert patched.json()["associated_pipeline"] == {"pipeline_id": "pl_demo_sales", "pipeline_name": "Sales line"}
    assert patched.json()["inbound_config"]["pipeline_id"] == "pl_demo_sales"
    cleared = call(emu, "PATCH", "phone-numbers/+14155550100", {"inbound_config": None})
    assert cleared.json()["associated_pipeline"] is None
    deleted = call(emu, "DELETE", "phone-numbers/+14155550100")
    assert deleted.status_code == 204 and deleted.content == b""
    assert call(emu, "GET", "phone-numbers").json() == []


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        (add_body("14155550100"), 400, "invalid_phone_format"),
        (add_body("+0123"), 400, "invalid_phone_format"),
        ({"provider": "byo", "phone_number": "+14155550100"}, 422, "unprocessable_content"),
        (add_body(provider="vonage"), 422, "unprocessable_content"),
    ],
)
def test_phone_number_add_errors(emu: Emulator, body: dict[str, Any], status: int, error_type: str) -> None:
    response = call(emu, "POST", "phone-numbers", body)
    assert response.status_code == status
    assert response.json()["error_type"] == error_type and response.json()["description"]


def test_phone_number_conflicts_and_not_found(emu: Emulator) -> None:
    assert call(emu, "POST", "phone-numbers", add_body()).status_code == 201
    again = call(emu, "POST", "phone-numbers", add_body())
    assert (again.status_code, again.json()["error_type"]) == (409, "phone_number_exists")
    for method in ("GET", "DELETE"):
        missing = call(emu, method, "phone-numbers/+19995550000")
        assert missing.status_code == 404 and "error_type" in missing.json()
    assert call(emu, "PATCH", "phone-numbers/+19995550000", {"inbound_config": None}).status_code == 404


def test_phone_number_patch_rules(emu: Emulator) -> None:
    call(emu, "POST", "phone-numbers", add_body())
    unknown = call(emu, "PATCH", "phone-numbers/+14155550100", {"outbound_config": {"pipeline_id": "pl_nope"}})
    assert (unknown.status_code, unknown.json()["error_type"]) == (404, "pipeline_not_found")
    for body in ({"label": "x"}, {"inbound_config": {"allowed_addresses": []}}, {"outbound_config": {"transport": "udp"}}):
        response = call(emu, "PATCH", "phone-numbers/+14155550100", body)
        assert response.status_code == 400, body
    # the plus sign is literal in the path; its percent-encoded form is the same number
    assert call(emu, "GET", "phone-numbers/%2B14155550100").status_code == 200


def test_auth_is_required_with_both_error_shapes(emu: Emulator) -> None:
    for headers in ({}, {"Authorization": ""}, basic_headers(secret="wrong"), {"Authorization": "Bearer x"}):
        phones = call(emu, "GET", "phone-numbers", headers=headers)
        assert phones.status_code == 401 and phones.json()["error_type"] == "unauthorized"
        agents = call(emu, "GET", "projects/a/agents", headers=headers)
        assert agents.status_code == 401 and agents.json()["reason"] == "InvalidPermission"
    assert call(emu, "GET", "phone-numbers", headers={"Authorization": "agora token=007abc"}).status_code == 200


# --------------------------------------------------------------------------- agents
def test_agent_join_get_update_speak_interrupt_history_turns_leave(emu: Emulator) -> None:
    started = join(emu, "concierge-1")
    assert started.status_code == 200
    agent_id = started.json()["agent_id"]
    assert started.json()["status"] in ("RUNNING", "STARTING") and isinstance(started.json()["create_ts"], int)
    got = call(emu, "GET", f"projects/app1/agents/{agent_id}").json()
    assert got["name"] == "concierge-1" and got["status"] == "RUNNING" and got["agent_id"] == agent_id
    updated = call(
        emu, "POST", f"projects/app1/agents/{agent_id}/update", {"properties": {"token": "t2", "llm": {"params": {"model": "m"}}}}
    )
    assert updated.status_code == 200 and updated.json()["agent_id"] == agent_id
    spoken = call(emu, "POST", f"projects/app1/agents/{agent_id}/speak", {"text": "hello", "priority": "APPEND"})
    assert spoken.status_code == 200 and spoken.json()["channel"] == "room"
    interrupted = emu.session.post(
        f"{emu.api}/v2/projects/app1/agents/{agent_id}/interrupt",
        headers={**H, "Content-Type": "application/json", "Content-Length": "0"},
        data=b"",
    )
    assert interrupted.status_code == 200 and interrupted.json()["agent_id"] == agent_id
    think = call(emu, "POST", f"projects/app1/agents/{agent_id}/think", {"text": "consider this"})
    assert think.status_code == 200
    history = call(emu, "GET", f"projects/app1/agents/{agent_id}/history").json()
    assert [c["content"] for c in history["contents"]] == ["hello", "consider this"]
    turns = call(emu, "GET", f"projects/app1/agents/{agent_id}/turns", params={"page_index": 1, "page_size": 1}).json()
    assert turns["name"] == "concierge-1" and turns["total_turn_count"] == 2 and turns["pagination"]["total_pages"] == 2
    emu.admin("POST", "config", {"stop_delay_s": 30})  # on the emulator's clock, which only the test moves past it
    left = emu.session.post(f"{emu.api}/v2/projects/app1/agents/{agent_id}/leave", headers=H)
    assert left.status_code == 200 and left.content == b""
    assert call(emu, "GET", f"projects/app1/agents/{agent_id}").json()["status"] == "STOPPING"
    emu.advance(31)
    assert call(emu, "GET", f"projects/app1/agents/{agent_id}").json()["status"] == "STOPPED"
    again = emu.session.post(f"{emu.api}/v2/projects/app1/agents/{agent_id}/leave", headers=H)
    assert (again.status_code, again.json()["reason"]) == (404, "TaskNotFound")


def test_agent_errors(emu: Emulator) -> None:
    missing_props = call(emu, "POST", "projects/app1/join", {"name": "x", "preset": "p", "properties": {"channel": "c"}})
    assert (missing_props.status_code, missing_props.json()["reason"]) == (400, "MissingRequiredField")
    assert "detail" in missing_props.json()
    no_llm = call(emu, "POST", "projects/app1/join", {"name": "x", "properties": agent_props("c")})
    assert (no_llm.status_code, no_llm.json()["reason"]) == (400, "MissingRequiredField")
    agent_id = join(emu, "n1").json()["agent_id"]
    assert (join(emu, "n1").status_code, join(emu, "n1").json()["reason"]) == (409, "TaskConflict")
    fixed = call(emu, "POST", f"projects/app1/agents/{agent_id}/update", {"properties": {"channel": "other"}})
    assert (fixed.status_code, fixed.json()["reason"]) == (400, "InvalidFieldValue")
    inner = call(emu, "POST", f"projects/app1/agents/{agent_id}/update", {"properties": {"llm": {"url": "x"}}})
    assert inner.status_code == 400
    unknown = call(emu, "GET", "projects/app1/agents/NOPE")
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "TaskNotFound")
    assert call(emu, "GET", f"projects/other-app/agents/{agent_id}").status_code == 404
    assert call(emu, "POST", f"projects/app1/agents/{agent_id}/speak", {"text": "x" * 600}).status_code == 400
    bad_json = emu.session.post(f"{emu.api}/v2/projects/app1/join", data=b"{nope", headers={**H, "Content-Type": "application/json"})
    assert (bad_json.status_code, bad_json.json()["reason"]) == (400, "InvalidRequestBody")


def test_name_is_never_reusable_even_after_stop(emu: Emulator) -> None:
    agent_id = join(emu, "once").json()["agent_id"]
    emu.session.post(f"{emu.api}/v2/projects/app1/agents/{agent_id}/leave", headers=H)
    emu.advance(1)  # past the 0.2 s stop delay on the emulator's clock
    assert call(emu, "GET", f"projects/app1/agents/{agent_id}").json()["status"] == "STOPPED"
    assert join(emu, "once").status_code == 409
    assert join(emu, "once", app="app2").status_code == 200, "names are scoped to an app"
    emu.admin("POST", "config", {"name_reuse": "lenient"})
    assert join(emu, "once").status_code == 200


def test_pagination_45_agents_in_3_pages(emu: Emulator) -> None:
    emu.seed(agents=[{"app_id": "app1", "name": f"a{i}", "preset": "p", "properties": agent_props(f"c{i}")} for i in range(45)])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 20}
        if cursor:
            params["cursor"] = cursor
        page = call(emu, "GET", "projects/app1/agents", params=params).json()
        pages += 1
        assert page["meta"]["total"] == 45 and page["data"]["count"] == len(page["data"]["list"])
        seen += [a["agent_id"] for a in page["data"]["list"]]
        cursor = page["meta"]["cursor"]
        if not cursor:
            break
    assert pages == 3 and len(seen) == 45 and len(set(seen)) == 45
    assert set(page["data"]["list"][0]) == {"agent_id", "start_ts", "status"}


def test_list_defaults_hide_old_and_stopped_agents(emu: Emulator) -> None:
    old = join(emu, "old").json()["agent_id"]
    emu.advance(3 * 3600)
    default = [a["agent_id"] for a in call(emu, "GET", "projects/app1/agents").json()["data"]["list"]]
    assert old not in default, "the default window is the last 2 hours"
    explicit = call(emu, "GET", "projects/app1/agents", params={"from_time": 0, "state": "2"}).json()["data"]["list"]
    assert [a["agent_id"] for a in explicit] == [old]
    emu.admin("POST", f"agents/{old}/crash")
    assert call(emu, "GET", "projects/app1/agents", params={"from_time": 0}).json()["data"]["list"] == []
    failed = call(emu, "GET", "projects/app1/agents", params={"from_time": 0, "state": "0,1,2,3,4,5,6"}).json()["data"]["list"]
    assert failed[0]["status"] == "FAILED"
    assert call(emu, "GET", "projects/app1/agents", params={"limit": 500}).status_code == 200
    channel = call(emu, "GET", "projects/app1/agents", params={"from_time": 0, "state": "6", "channel": "elsewhere"}).json()
    assert channel["data"]["count"] == 0 and channel["meta"]["cursor"] == ""


def test_idle_timeout_and_72_hour_cap(emu: Emulator) -> None:
    idle = join(emu, "idle", channel="a", idle_timeout=30).json()["agent_id"]
    default = call(
        emu,
        "POST",
        "projects/app1/join",
        {"name": "dflt", "preset": "p", "properties": {k: v for k, v in agent_props("b").items() if k != "idle_timeout"}},
    ).json()["agent_id"]
    forever = join(emu, "forever", channel="c", idle_timeout=0).json()["agent_id"]
    emu.advance(31)
    assert call(emu, "GET", f"projects/app1/agents/{idle}").json()["status"] == "STOPPED"
    assert call(emu, "GET", f"projects/app1/agents/{default}").json()["status"] == "STOPPED"
    assert call(emu, "GET", f"projects/app1/agents/{forever}").json()["status"] == "RUNNING"
    emu.advance(72 * 3600)
    capped = call(emu, "GET", f"projects/app1/agents/{forever}").json()
    assert capped["status"] == "STOPPED" and "72" in capped["message"]


# --------------------------------------------------------------------------- telephony
def test_telephony_call_list_get_hangup(emu: Emulator) -> None:
    call(emu, "POST", "phone-numbers", add_body())
    body = {
        "name": "call-1",
        "sip": {"to_number": "+14155559999", "from_number": "+14155550100", "rtc_uid": "9", "rtc_token": "t"},
        "properties": agent_props("call-room"),
        "pipeline_id": "pl_demo_sales",
    }
    created = call(emu, "POST", "projects/app1/call", body)
    assert created.status_code == 200
    agent_id = created.json()["agent_id"]
    listed = call(emu, "GET", "projects/app1/call").json()
    assert listed["data"]["list"][0]["agent_id"] == agent_id and listed["meta"]["cursor"] == ""
    got = call(emu, "GET", f"projects/app1/calls/{agent_id}").json()
    assert got["state"] == "answered" and got["type"] == "outbound"
    hung = emu.session.post(f"{emu.api}/v2/projects/app1/calls/{agent_id}/hangup", headers={**H, "Content-Type": "application/json"})
    assert hung.status_code == 200 and hung.json() == {}
    assert call(emu, "GET", f"projects/app1/calls/{agent_id}").json()["reason"] == "request"
    unknown_from = call(emu, "POST", "projects/app1/call", {**body, "name": "c2", "sip": {**body["sip"], "from_number": "+15550000000"}})
    assert unknown_from.status_code == 422 and "error_type" in unknown_from.json()
    assert call(emu, "GET", "projects/app1/calls/NOPE").status_code == 404


# --------------------------------------------------------------------------- admin API
def test_admin_requests_log_and_reset(emu: Emulator) -> None:
    call(emu, "GET", "phone-numbers")
    call(emu, "GET", "phone-numbers/+1999")
    log = emu.requests()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("GET", "/api/conversational-ai-agent/v2/phone-numbers", 200),
        ("GET", "/api/conversational-ai-agent/v2/phone-numbers/+1999", 404),
    ]
    assert all({"query", "ts"} <= set(r) for r in log)
    assert emu.admin("GET", "health") == {"ok": True}
    emu.reset()
    assert emu.requests() == []


def test_admin_faults(emu: Emulator) -> None:
    emu.fault(method="GET", path="phone-numbers$", status=503, count=2, retry_after=1)
    first = call(emu, "GET", "phone-numbers")
    assert first.status_code == 503 and first.headers["Retry-After"] == "1" and "error_type" in first.json()
    assert call(emu, "GET", "phone-numbers").status_code == 503
    assert call(emu, "GET", "phone-numbers").status_code == 200
    emu.fault(method="POST", path="/join$", drop=True, count=1)
    with pytest.raises(requests.ConnectionError):
        join(emu, "dropped")
    assert join(emu, "dropped").status_code == 409, "a dropped call was executed before the drop"
    assert emu.requests()[-2].get("dropped") is True
    emu.fault(latency_ms=50)
    started = time.monotonic()
    call(emu, "GET", "phone-numbers")
    assert time.monotonic() - started >= 0.05
    emu.admin("DELETE", "faults")
    emu.fault(rate=1.0, status=500)
    assert call(emu, "GET", "phone-numbers").status_code == 500
    emu.admin("DELETE", "faults")
    assert call(emu, "GET", "phone-numbers").status_code == 200


def test_a_hold_fault_parks_calls_until_released_then_executes_them(emu: Emulator) -> None:
    emu.fault(method="POST", path="/join$", hold=True, count=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = [pool.submit(join, emu, name) for name in ("held-a", "held-b")]
        while emu.admin("GET", "faults/held")["held"] < 2:  # no clock: the server says when both wait
            time.sleep(0.005)
        assert not any(a.done() for a in answers), "a parked call answered before its release"
        assert not [r for r in emu.requests() if r["path"].endswith("/join")], "a parked call ran before its release"
        assert join(emu, "not-held").status_code == 200, "the rule holds `count` calls only"
        assert emu.admin("POST", "faults/release") == {"ok": True, "released": 2}
        assert [a.result(timeout=30).status_code for a in answers] == [200, 200]
    assert emu.admin("GET", "faults/held") == {"held": 0}
    assert len([r for r in emu.requests() if r["path"].endswith("/join")]) == 3
    assert emu.admin("POST", "faults/release")["released"] == 0, "a release with nothing parked is a no-op"


def test_the_connections_route_lists_open_connections_until_the_server_closed_them(emu: Emulator) -> None:
    before = emu.connections()
    address = urlsplit(emu.url)
    client = socket.create_connection((str(address.hostname), int(address.port or 80)))
    try:
        opened = emu.connections() - before
        assert len(opened) == 1, "a connection accepted before the question is listed, even before its first request"
        asked = requests.get(f"{emu.url}/_emulator/connections", timeout=30, headers={"Connection": "close"}).json()
        assert asked["asking"] not in asked["open"], "the connection asking is not listed"
        # a request sent, then the client gone (as if killed): the server executes it, then closes
        client.sendall(b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        client.close()
    emu.wait_closed(before)
    assert not (emu.connections() - before)
    in_process = EmulatorApp(Store())  # `endpoint: local`: no connections
    assert json.loads(in_process.handle(Request("GET", "/_emulator/connections", {})).body) == {"open": [], "asking": None}


def test_admin_seed_numbers_with_bindings(emu: Emulator) -> None:
    emu.seed(
        pipelines=[{"pipeline_id": "pl_x", "pipeline_name": "X"}],
        phone_numbers=[number("+14155550111", inbound_config={"pipeline_id": "pl_x"})],
    )
    live = emu.numbers()["+14155550111"]
    assert live["associated_pipeline"] == {"pipeline_id": "pl_x", "pipeline_name": "X"}


# --------------------------------------------------------------------------- the server process
def test_serve_persists_data_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "store.json"
    url, process = start_emulator(["--data", str(data)])
    try:
        response = requests.post(f"{url}/api/conversational-ai-agent/v2/phone-numbers", json=add_body(), headers=H, timeout=10)
        assert response.status_code == 201
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert "+14155550100" in json.loads(data.read_text())["numbers"]
    url, process = start_emulator(["--data", str(data)])
    try:
        assert len(requests.get(f"{url}/api/conversational-ai-agent/v2/phone-numbers", headers=H, timeout=10).json()) == 1
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_seed_file_and_demo_credentials(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"phone_numbers": [number("+14155550123")]}))
    url, process = start_emulator(["--seed", str(seed)], env={"AGORA_CUSTOMER_ID": "", "AGORA_CUSTOMER_SECRET": ""})
    try:
        listed = requests.get(f"{url}/api/conversational-ai-agent/v2/phone-numbers", headers=basic_headers("demo", "demo"), timeout=10)
        assert [n["phone_number"] for n in listed.json()] == ["+14155550123"]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "demo" in stderr


def test_in_process_adapter_serves_the_same_app() -> None:
    app = EmulatorApp(Store(), customer_id="a", customer_secret="b")
    session = requests.Session()
    session.mount("http://emu/", EmulatorAdapter(app))
    response = session.post("http://emu/api/conversational-ai-agent/v2/phone-numbers", json=add_body(), headers=basic_headers("a", "b"))
    assert response.status_code == 201
    app.faults.clear()
    session.post("http://emu/_emulator/faults", json={"method": "GET", "drop": True, "count": 1})
    with pytest.raises(requests.ConnectionError):
        session.get("http://emu/api/conversational-ai-agent/v2/phone-numbers", headers=basic_headers("a", "b"))
    assert [r["status"] for r in app.requests] == [201, 200]
