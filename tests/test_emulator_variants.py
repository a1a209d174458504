"""Emulator variants over real loopback HTTP: each alternative reading of the API, and the default unchanged."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import requests

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator, agent_props, basic_headers
from .test_emulator import add_body, call, join

H = basic_headers()
APP = "app1"


def bind(emu: Emulator, phone: str = "+14155550100", inbound: str | None = "pl_demo_support", outbound: str | None = None) -> None:
    body: dict[str, Any] = {}
    if inbound:
        body["inbound_config"] = {"pipeline_id": inbound}
    if outbound:
        body["outbound_config"] = {"pipeline_id": outbound}
    assert call(emu, "PATCH", f"phone-numbers/{phone}", body).status_code == 200


def listed(emu: Emulator, **params: Any) -> requests.Response:
    return call(emu, "GET", f"projects/{APP}/agents", params=params)


# --------------------------------------------------------------------------- configuration
def test_variants_are_set_read_and_reset(emu: Emulator) -> None:
    assert emu.admin("GET", "config")["variants"] == []
    assert emu.set_variants("single-state", "bare-configs") == ["bare-configs", "single-state"]
    config = emu.admin("GET", "config")
    assert config["variants"] == ["bare-configs", "single-state"] and config["app_certificate"] is False
    emu.reset()
    assert emu.admin("GET", "config")["variants"] == []


@pytest.mark.parametrize("value", [["no-such-variant"], "bare-configs", [1], None])
def test_unknown_or_malformed_variants_are_400_and_change_nothing(emu: Emulator, value: Any) -> None:
    emu.set_variants("page-limit-20")
    response = emu.session.post(f"{emu.url}/_emulator/config", json={"variants": value, "stop_delay_s": 3}, timeout=10)
    assert response.status_code == 400 and response.json()["description"]
    if value == ["no-such-variant"]:
        assert "no-such-variant" in response.json()["description"]
    config = emu.admin("GET", "config")
    assert config["variants"] == ["page-limit-20"] and config["stop_delay_s"] == 0.2


def test_without_variants_nothing_changes(emu: Emulator) -> None:
    call(emu, "POST", "phone-numbers", add_body())
    bind(emu)
    number = call(emu, "GET", "phone-numbers/+14155550100").json()
    assert set(number) == {
        "provider",
        "phone_number",
        "label",
        "inbound",
        "outbound",
        "associated_pipeline",
        "inbound_config",
        "outbound_config",
    }
    assert number["inbound_config"] == {"allowed_addresses": ["10.0.0.0/8"], "pipeline_id": "pl_demo_support"}
    assert number["outbound_config"]["address"] == "alice@sip.example.com"
    agent_id = join(emu, "a1").json()["agent_id"]
    assert call(emu, "GET", f"projects/{APP}/agents/{agent_id}").json()["name"] == "a1"
    assert listed(emu, state="0,1,2", limit=100).status_code == 200
    assert join(emu, "a2").status_code == 200, "same channel and uid: allowed by default"
    missing = call(emu, "GET", "phone-numbers/+19995550000").json()
    assert missing["error_type"] == "phone_number_not_found"


# --------------------------------------------------------------------------- phone-number shapes
def test_bare_configs(emu: Emulator) -> None:
    emu.set_variants("bare-configs")
    call(emu, "POST", "phone-numbers", add_body())
    bind(emu, inbound=None, outbound="pl_demo_sales")
    for number in (call(emu, "GET", "phone-numbers/+14155550100").json(), call(emu, "GET", "phone-numbers").json()[0]):
        assert number["inbound_config"] == {"allowed_addresses": ["10.0.0.0/8"]}
        assert "pipeline_id" not in number["outbound_config"] and number["outbound_config"]["transport"] == "tls"
        assert number["associated_pipeline"] == {"pipeline_id": "pl_demo_sales", "pipeline_name": "Sales line"}
    bind(emu, inbound="pl_demo_support")
    got = call(emu, "GET", "phone-numbers/+14155550100").json()
    assert got["associated_pipeline"]["pipeline_id"] == "pl_demo_support", "the inbound binding wins"


def test_null_configs(emu: Emulator) -> None:
    emu.set_variants("null-configs")
    created = call(emu, "POST", "phone-numbers", add_body())
    assert created.status_code == 201
    bind(emu)
    for number in (call(emu, "GET", "phone-numbers/+14155550100").json(), call(emu, "GET", "phone-numbers").json()[0]):
        assert number["inbound_config"] is None and number["outbound_config"] is None
        assert number["associated_pipeline"]["pipeline_id"] == "pl_demo_support"


def test_extra_fields(emu: Emulator) -> None:
    emu.set_variants("extra-fields")
    call(emu, "POST", "phone-numbers", add_body())
    bind(emu)
    got = call(emu, "GET", "phone-numbers/+14155550100").json()
    for where in (got, got["inbound_config"], got["outbound_config"]):
        assert {"id", "created_at", "updated_at", "sip_domain"} <= set(where)
    assert got["inbound_config"]["pipeline_id"] == "pl_demo_support", "extra fields do not hide the binding"
    assert got["id"] == call(emu, "GET", "phone-numbers").json()[0]["id"], "ids are stable"
    assert got["inbound_config"]["id"] != got["outbound_config"]["id"] != got["id"]


@pytest.mark.parametrize(
    ("address", "transport", "shown"),
    [
        ("SIP.Example.com", "tls", "sip.example.com:5061"),
        ("sip.example.com", "udp", "sip.example.com:5060"),
        ("sip.example.com", None, "sip.example.com:5060"),
        ("Alice:pw-Secret-1@SIP.example.COM", "TLS", "alice@sip.example.com:5061"),
        ("sip.example.com:5080", "tls", "sip.example.com:5080"),
        ("[2001:db8::1]", "tcp", "[2001:db8::1]:5060"),
    ],
)
def test_normalized_address(emu: Emulator, address: str, transport: str | None, shown: str) -> None:
    emu.set_variants("normalized-address")
    outbound: dict[str, Any] = {"address": address}
    if transport:
        outbound["transport"] = transport
    call(emu, "POST", "phone-numbers", add_body(outbound_config=outbound))
    assert call(emu, "GET", "phone-numbers/+14155550100").json()["outbound_config"]["address"] == shown
    assert call(emu, "GET", "phone-numbers").json()[0]["outbound_config"]["address"] == shown


def test_not_found_type(emu: Emulator) -> None:
    emu.set_variants("not-found-type")
    for method in ("GET", "DELETE"):
        missing = call(emu, method, "phone-numbers/+19995550000")
        assert (missing.status_code, missing.json()["error_type"]) == (404, "not_found")
    call(emu, "POST", "phone-numbers", add_body())
    unknown = call(emu, "PATCH", "phone-numbers/+14155550100", {"inbound_config": {"pipeline_id": "pl_nope"}})
    assert (unknown.status_code, unknown.json()["error_type"]) == (404, "not_found")
    agent = call(emu, "GET", f"projects/{APP}/agents/NOPE")
    assert agent.json()["reason"] == "TaskNotFound", "agent errors keep their own shape"


def test_conflict_409_refuses_each_first_write_once_and_writes_nothing(emu: Emulator) -> None:
    emu.set_variants("conflict-409")
    first = call(emu, "POST", "phone-numbers", add_body())
    assert (first.status_code, first.json()["error_type"]) == (409, "conflict")
    assert "Concurrent modification conflict or resource locked" in first.json()["description"]
    assert call(emu, "GET", "phone-numbers").json() == [], "the refused add did not happen"
    assert call(emu, "POST", "phone-numbers", add_body()).status_code == 201
    assert call(emu, "PATCH", "phone-numbers/+14155550100", {"inbound_config": {"pipeline_id": "pl_demo_support"}}).status_code == 409
    assert call(emu, "GET", "phone-numbers/+14155550100").json()["associated_pipeline"] is None
    bind(emu)
    bind(emu, inbound="pl_demo_sales")
    assert call(emu, "DELETE", "phone-numbers/+14155550100").status_code == 409
    assert len(call(emu, "GET", "phone-numbers").json()) == 1
    assert call(emu, "DELETE", "phone-numbers/+14155550100").status_code == 204
    other = call(emu, "POST", "phone-numbers", add_body("+14155550101"))
    assert other.status_code == 409, "each number has its own first write"
    invalid = call(emu, "POST", "phone-numbers", add_body("+0123"))
    assert invalid.status_code == 400, "validation comes first"


# --------------------------------------------------------------------------- agents
def test_no_agent_name(emu: Emulator) -> None:
    emu.set_variants("no-agent-name")
    agent_id = join(emu, "nameless").json()["agent_id"]
    got = call(emu, "GET", f"projects/{APP}/agents/{agent_id}").json()
    assert "name" not in got and "channel" not in got and got["status"] == "RUNNING"
    assert join(emu, "nameless").status_code == 409, "the name is still unique"


def test_single_state(emu: Emulator) -> None:
    emu.set_variants("single-state")
    join(emu, "a1")
    many = listed(emu, state="1,2,5", from_time=0)
    assert (many.status_code, many.json()["reason"]) == (400, "InvalidFieldValue")
    one = listed(emu, state="2", from_time=0)
    assert one.status_code == 200 and one.json()["meta"]["total"] == 1
    assert listed(emu).status_code == 200, "the default filter is one state"


def test_page_limit_20(emu: Emulator) -> None:
    emu.set_variants("page-limit-20")
    emu.seed(agents=[{"app_id": APP, "name": f"a{i}", "preset": "p", "properties": agent_props(f"c{i}")} for i in range(25)])
    too_big = listed(emu, limit=21)
    assert (too_big.status_code, too_big.json()["reason"]) == (400, "InvalidFieldValue")
    page = listed(emu, limit=20).json()
    assert page["data"]["count"] == 20 and page["meta"]["cursor"]


def test_idle_status(emu: Emulator) -> None:
    emu.set_variants("idle-status")
    alone = join(emu, "alone", channel="empty-room").json()["agent_id"]
    busy = join(emu, "busy", channel="full-room").json()["agent_id"]
    assert call(emu, "GET", f"projects/{APP}/agents/{alone}").json()["status"] == "RUNNING", "channels have users by default"
    emu.remote_users(APP, "empty-room", False)
    assert call(emu, "GET", f"projects/{APP}/agents/{alone}").json()["status"] == "IDLE"
    running = [a["agent_id"] for a in listed(emu, state="2").json()["data"]["list"]]
    assert running == [busy]
    idle = listed(emu, state="0").json()["data"]["list"]
    assert [(a["agent_id"], a["status"]) for a in idle] == [(alone, "IDLE")]
    emu.remote_users(APP, "empty-room", True)
    assert call(emu, "GET", f"projects/{APP}/agents/{alone}").json()["status"] == "RUNNING"
    emu.remote_users(APP, "empty-room", False)
    emu.set_variants()
    assert call(emu, "GET", f"projects/{APP}/agents/{alone}").json()["status"] == "RUNNING", "only the variant shows IDLE"


@pytest.mark.parametrize(
    "doc",
    [{"app_id": APP, "channel": "c"}, {"app_id": APP, "channel": "", "remote_users": False}, {"channel": "c", "remote_users": "no"}, []],
)
def test_channels_admin_rejects_bad_values(emu: Emulator, doc: Any) -> None:
    response = emu.session.post(f"{emu.url}/_emulator/channels", json=doc, timeout=10)
    assert response.status_code == 400 and response.json()["description"]


def test_uid_busy(emu: Emulator) -> None:
    emu.admin("POST", "config", {"stop_delay_s": 5})
    emu.set_variants("uid-busy")
    first = join(emu, "first", channel="room", uid="7").json()["agent_id"]
    clash = join(emu, "second", channel="room", uid="7")
    name_clash = join(emu, "first", channel="other", uid="8")
    assert (clash.status_code, clash.json()["reason"]) == (409, "TaskConflict")
    assert clash.json()["reason"] == name_clash.json()["reason"] and "'second'" in clash.json()["detail"]
    assert join(emu, "other-uid", channel="room", uid="8").status_code == 200
    assert join(emu, "other-room", channel="room-2", uid="7").status_code == 200
    emu.session.post(f"{emu.api}/v2/projects/{APP}/agents/{first}/leave", headers=H, timeout=10)
    assert join(emu, "third", channel="room", uid="7").status_code == 409, "STOPPING still holds the uid"
    emu.advance(6)
    assert join(emu, "fourth", channel="room", uid="7").status_code == 200


# --------------------------------------------------------------------------- through the official SDK
@pytest.fixture
def sdk(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    agora_agent = pytest.importorskip("agora_agent", reason="the agora-agents SDK is a test dependency")
    monkeypatch.setenv("AGORA_AGENTS_API_BASE_URL", emu.url)
    return agora_agent.Agora(
        area=agora_agent.Area.US, app_id="a" * 32, app_certificate="c" * 32, customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET
    )


def test_sdk_reads_every_phone_number_variant(emu: Emulator, sdk: Any) -> None:
    call(emu, "POST", "phone-numbers", add_body())
    bind(emu)
    for variant in ("bare-configs", "null-configs", "extra-fields", "normalized-address"):
        emu.set_variants(variant)
        got = sdk.phone_numbers.get("+14155550100")
        assert got.associated_pipeline.pipeline_id == "pl_demo_support", variant
        assert [n.phone_number for n in sdk.phone_numbers.list()] == ["+14155550100"]
    emu.set_variants("not-found-type")
    with pytest.raises(Exception) as raised:
        sdk.phone_numbers.get("+19995550000")
    assert getattr(raised.value, "status_code", None) == 404


def test_sdk_agents_under_agent_variants(emu: Emulator, sdk: Any) -> None:
    emu.set_variants("no-agent-name", "single-state", "page-limit-20", "idle-status", "uid-busy")
    app = "a" * 32
    started = sdk.agents.start(app, name="sdk-1", preset="p1", properties=agent_props("sdk-room"))
    assert getattr(sdk.agents.get(app, started.agent_id), "name", None) is None
    assert [a.agent_id for a in sdk.agents.list(app, limit=20, from_time=0, state="2")] == [started.agent_id]
    with pytest.raises(Exception) as raised:
        list(sdk.agents.list(app, limit=100, from_time=0, state="2"))
    assert getattr(raised.value, "status_code", None) == 400
    with pytest.raises(Exception) as conflict:
        sdk.agents.start(app, name="sdk-2", preset="p1", properties=agent_props("sdk-room"))
    assert getattr(conflict.value, "status_code", None) == 409


# --------------------------------------------------------------------------- emulator serve --variant
def test_serve_variant_option_survives_reset(serve_emulator: Any) -> None:
    emu = serve_emulator("--variant", "bare-configs", "--variant", "single-state")
    assert emu.admin("GET", "config")["variants"] == ["bare-configs", "single-state"]
    emu.reset()
    assert emu.admin("GET", "config")["variants"] == ["bare-configs", "single-state"], "reset returns to the serve options"
    assert call(emu, "GET", f"projects/{APP}/agents", params={"state": "1,2"}).status_code == 400


def test_serve_unknown_variant_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", "--variant", "bare-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "bare-config" in result.stderr and "bare-configs" in result.stderr and "Traceback" not in result.stderr
