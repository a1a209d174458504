"""Fidelity: the official `agora-agents` SDK drives the emulator, and sees what our client sees.

The SDK is an independent client generated from Agora's API definition; if it works unchanged
against the emulator (paths, `+` in paths, bodies, status codes, pagination, empty bodies), the
emulator is faithful where the SDK can tell.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.client import Client, Credentials, resolve_endpoint

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator, agent_props

APP = "a" * 32


@pytest.fixture
def sdk(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    agora_agent = pytest.importorskip("agora_agent", reason="the agora-agents SDK is a test dependency")
    monkeypatch.setenv("AGORA_AGENTS_API_BASE_URL", emu.url)
    return agora_agent.Agora(
        area=agora_agent.Area.US, app_id=APP, app_certificate="c" * 32, customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET
    )


@pytest.fixture
def ours(emu: Emulator) -> Client:
    return Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET))


def test_sdk_phone_numbers(sdk: Any, ours: Client) -> None:
    added = sdk.phone_numbers.add(
        provider="byo",
        phone_number="+14155550100",
        label="Sales",
        inbound_config={"allowed_addresses": ["10.0.0.0/8"]},
        outbound_config={"address": "sip.example.com", "transport": "tls", "prefix": "1"},
    )
    assert added.phone_number == "+14155550100"
    listed = sdk.phone_numbers.list()
    assert [n.phone_number for n in listed] == [n["phone_number"] for n in ours.list_numbers()]
    got = sdk.phone_numbers.get("+14155550100")
    assert got.label == "Sales" and got.label == ours.get_number("+14155550100")["label"]
    updated = sdk.phone_numbers.update("+14155550100", inbound_config={"pipeline_id": "pl_demo_support"})
    assert updated.associated_pipeline.pipeline_id == "pl_demo_support"
    assert ours.get_number("+14155550100")["associated_pipeline"]["pipeline_name"] == "Support desk"
    cleared = sdk.phone_numbers.update("+14155550100", inbound_config=None)
    assert cleared.associated_pipeline is None
    sdk.phone_numbers.delete("+14155550100")
    assert ours.list_numbers() == []


def test_sdk_agents(sdk: Any, ours: Client, emu: Emulator) -> None:
    started = sdk.agents.start(APP, name="sdk-agent-1", preset="p1", properties=agent_props("sdk-room"))
    agent_id = started.agent_id
    emu.seed(agents=[{"app_id": APP, "name": f"bulk-{i}", "preset": "p", "properties": agent_props(f"room-{i}")} for i in range(24)])
    pager = sdk.agents.list(APP, limit=10, from_time=0, state="1,2,5")
    sdk_ids = [item.agent_id for item in pager]
    our_ids = [item["agent_id"] for item in ours.iter_agents(APP, from_time=0, limit=10)]
    assert len(sdk_ids) == 25 and sdk_ids == our_ids
    got = sdk.agents.get(APP, agent_id)
    assert got.status == "RUNNING" and got.name == "sdk-agent-1" == ours.get_agent(APP, agent_id)["name"]
    updated = sdk.agents.update(
        APP, agent_id, properties={"token": "new-token", "llm": {"system_messages": [{"role": "system", "content": "x"}]}}
    )
    assert updated.agent_id == agent_id
    spoken = sdk.agents.speak(APP, agent_id, text="hello there")
    assert spoken.agent_id == agent_id
    sdk.agents.interrupt(APP, agent_id)
    sdk.agent_management.agent_think(APP, agent_id, text="think about it")
    history = sdk.agents.get_history(APP, agent_id)
    assert [c.content for c in history.contents] == ["hello there", "think about it"]
    sdk.agents.stop(APP, agent_id)
    assert ours.get_agent(APP, agent_id)["status"] in ("STOPPING", "STOPPED")
    turns = sdk.agents.get_turns(APP, agent_id)
    assert turns.total_turn_count == 2


def test_sdk_telephony(sdk: Any, ours: Client) -> None:
    ours.add_number(
        {
            "provider": "byo",
            "phone_number": "+14155550100",
            "label": "out",
            "inbound_config": {},
            "outbound_config": {"address": "sip.example.com"},
        }
    )
    call = sdk.telephony.call(
        APP,
        name="call-1",
        sip={"to_number": "+14155559999", "from_number": "+14155550100", "rtc_uid": "99", "rtc_token": "t"},
        properties=agent_props("call-room"),
        pipeline_id="pl_demo_sales",
    )
    got = sdk.telephony.get(APP, call.agent_id)
    assert got.state == "answered"
    listed = [c.agent_id for c in sdk.telephony.list(APP)]
    assert listed == [call.agent_id]
    sdk.telephony.hangup(APP, call.agent_id)
    assert sdk.telephony.get(APP, call.agent_id).state == "hangup"
