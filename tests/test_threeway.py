"""The three-way comparison (DESIGN.md section 3) as tables: declaration vs applied, live vs observed.

Each API reading of agora-api.md section 14 is a function that turns the emulator's default answer
into that reading; the same readings are played by the emulator's variants end to end
(tests/test_variants.py). Here they pin down the decisions one field at a time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from reconciler.diff import applied_agent_essence, applied_phone_essence, diff
from reconciler.ledger import Ledger
from reconciler.model import AgentProbe, AgentSpec, Desired, Live, LiveAgent, PhoneNumberSpec, Settings
from reconciler.observed import canonical_sip, observed_form
from reconciler.plan import DECLARATION, DRIFT, Action

SALT = "fixed-salt"
SIP_SECRET = "trunk-user@sip.Example.com"

NUMBER = PhoneNumberSpec(
    phone_number="+14155550100",
    provider="byo",
    label="Sales",
    inbound_config={"allowed_addresses": ["10.0.0.0/8"]},
    outbound_config={"address": "sip.Example.com", "transport": "tls", "prefix": "9"},
    inbound_pipeline_id="pl_a",
    outbound_pipeline_id="pl_b",
)


# --------------------------------------------------------------------------- API readings
def default(spec: PhoneNumberSpec) -> dict[str, Any]:
    """What the emulator answers by default: bindings inside both configs and associated_pipeline."""
    return {
        "provider": spec.provider,
        "phone_number": spec.phone_number,
        "label": spec.label,
        "inbound": spec.inbound,
        "outbound": spec.outbound,
        "associated_pipeline": {"pipeline_id": spec.inbound_pipeline_id or spec.outbound_pipeline_id, "pipeline_name": "x"},
        "inbound_config": {**spec.inbound_config, "pipeline_id": spec.inbound_pipeline_id},
        "outbound_config": {**spec.outbound_config, "pipeline_id": spec.outbound_pipeline_id},
    }


def bare_configs(item: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(item)
    for key in ("inbound_config", "outbound_config"):
        out[key].pop("pipeline_id", None)
    return out


def null_configs(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "inbound_config": None, "outbound_config": None}


def extra_fields(item: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(item)
    out.update(id="pn_123", created_at=1, updated_at=2)
    for key in ("inbound_config", "outbound_config"):
        if isinstance(out[key], dict):
            out[key].update(id="cfg_1", sip_domain="sip.agora.io", updated_at=3)
    return out


def normalized_address(item: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(item)
    if isinstance(out["outbound_config"], dict) and "address" in out["outbound_config"]:
        out["outbound_config"]["address"] = canonical_sip(out["outbound_config"]["address"], out["outbound_config"].get("transport"))
    return out


def same(item: dict[str, Any]) -> dict[str, Any]:
    return item


READINGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "default": same,
    "bare-configs": bare_configs,
    "null-configs": null_configs,
    "extra-fields": extra_fields,
    "normalized-address": normalized_address,
    "all": lambda item: normalized_address(extra_fields(bare_configs(item))),
}


def owned(spec: PhoneNumberSpec, answer: dict[str, Any] | None) -> Ledger:
    """A ledger as the executor leaves it after importing `spec` and seeing `answer`."""
    ledger = Ledger(salt=SALT)
    entry: dict[str, Any] = {"kind": "phone_number", "applied": applied_phone_essence(spec, SALT), "protect": False}
    if answer is not None:
        entry["observed"] = observed_form(spec, answer, SALT)
    ledger.resources[str(spec.address)] = entry
    return ledger


def plan_for(spec: PhoneNumberSpec, live: dict[str, Any] | None, ledger: Ledger) -> Any:
    return diff(Desired(Settings(), (spec,), ()), Live({spec.phone_number: live} if live else {}, {}), ledger)


def rebind(item: dict[str, Any], inbound: str | None) -> dict[str, Any]:
    """An out-of-band PATCH of the inbound binding, as each reading shows it."""
    out = copy.deepcopy(item)
    if isinstance(out.get("inbound_config"), dict) and "pipeline_id" in out["inbound_config"]:
        out["inbound_config"]["pipeline_id"] = inbound
    out["associated_pipeline"] = {"pipeline_id": inbound, "pipeline_name": "y"} if inbound else None
    return out


# --------------------------------------------------------------------------- in sync under every reading
@pytest.mark.parametrize("reading", sorted(READINGS))
def test_in_sync_under_every_reading(reading: str) -> None:
    answer = READINGS[reading](default(NUMBER))
    result = plan_for(NUMBER, answer, owned(NUMBER, answer))
    assert result.changes == [] and result.unchanged == 1


@pytest.mark.parametrize("reading", ["default", "bare-configs", "null-configs", "extra-fields", "all"])
def test_out_of_band_inbound_binding_is_drift_wherever_readable(reading: str) -> None:
    answer = READINGS[reading](default(NUMBER))
    result = plan_for(NUMBER, rebind(answer, "pl_console"), owned(NUMBER, answer))
    [change] = result.changes
    assert change.action is Action.UPDATE and change.reason.startswith("changed outside the tool (drift)")
    assert all(f.origin == DRIFT for f in change.fields)
    expected = "inbound_config.pipeline_id" if reading in ("default", "extra-fields") else "associated_pipeline"
    assert [(f.path, f.before, f.after) for f in change.fields] == [(expected, "pl_console", "pl_a")]


def test_an_unreadable_binding_is_unknown_never_drift() -> None:
    """bare-configs: the outbound binding shows nowhere while an inbound one exists."""
    answer = bare_configs(default(NUMBER))
    assert plan_for(NUMBER, answer, owned(NUMBER, answer)).changes == []


def test_fields_the_api_stops_returning_are_unknown_not_drift() -> None:
    answer = default(NUMBER)
    later = copy.deepcopy(answer)
    del later["label"]
    del later["outbound_config"]["prefix"]
    assert plan_for(NUMBER, later, owned(NUMBER, answer)).changes == []


def test_fields_the_api_adds_are_ignored_but_declared_ones_drift() -> None:
    answer = default(NUMBER)
    later = copy.deepcopy(answer)
    later["inbound_config"]["caller_id"] = "+1999"  # not declared: ignored
    later["label"] = "Renamed in the console"  # declared: drift, and a replace
    [change] = plan_for(NUMBER, later, owned(NUMBER, answer)).changes
    assert change.action is Action.REPLACE and change.disruptive
    assert [(f.path, f.before, f.after, f.origin) for f in change.fields] == [("label", "Renamed in the console", "Sales", DRIFT)]


def test_a_normalised_address_recorded_at_write_time_is_not_drift_but_a_later_change_is() -> None:
    answer = normalized_address(default(NUMBER))
    assert answer["outbound_config"]["address"] == "sip.example.com:5061"
    ledger = owned(NUMBER, answer)
    assert plan_for(NUMBER, answer, ledger).changes == []
    moved = copy.deepcopy(answer)
    moved["outbound_config"]["address"] = "sip.example.com:5070"
    [change] = plan_for(NUMBER, moved, ledger).changes
    assert [(f.path, f.origin) for f in change.fields] == [("outbound_config.address", DRIFT)]


@pytest.mark.parametrize("reading", sorted(READINGS))
def test_a_ledger_without_observed_forms_compares_against_what_was_applied(reading: str) -> None:
    """Ledgers written before observed forms: the applied form stands in, normalisations forgiven."""
    answer = READINGS[reading](default(NUMBER))
    assert plan_for(NUMBER, answer, owned(NUMBER, None)).changes == []
    [change] = plan_for(NUMBER, rebind(answer, None), owned(NUMBER, None)).changes
    assert change.action is Action.UPDATE and change.fields[0].origin == DRIFT


# --------------------------------------------------------------------------- configuration changes
def test_a_configuration_change_is_declaration_vs_applied_not_vs_live() -> None:
    answer = bare_configs(default(NUMBER))  # the API does not even show the outbound binding
    changed = replace(NUMBER, outbound_pipeline_id="pl_c")
    [change] = plan_for(changed, answer, owned(NUMBER, answer)).changes
    assert change.action is Action.UPDATE and not change.reason.startswith("changed outside")
    assert [(f.path, f.before, f.after, f.origin) for f in change.fields] == [("outbound_config.pipeline_id", "pl_b", "pl_c", DECLARATION)]


def test_declaration_and_drift_in_one_change_each_say_where_they_come_from() -> None:
    answer = default(NUMBER)
    changed = replace(NUMBER, label="Sales (new)")
    [change] = plan_for(changed, rebind(answer, "pl_console"), owned(NUMBER, answer)).changes
    assert change.action is Action.REPLACE and change.reason.startswith("label cannot be changed in place")
    origins = {f.path: f.origin for f in change.fields}
    assert origins == {"inbound_config.pipeline_id": DRIFT, "label": DECLARATION}


def test_a_drifted_field_that_the_declaration_also_changes_is_reported_once_as_declaration() -> None:
    answer = default(NUMBER)
    changed = replace(NUMBER, inbound_pipeline_id="pl_new")
    [change] = plan_for(changed, rebind(answer, "pl_console"), owned(NUMBER, answer)).changes
    assert [(f.path, f.origin) for f in change.fields] == [("inbound_config.pipeline_id", DECLARATION)]


def test_secret_addresses_are_fingerprinted_in_observed_and_masked_in_drift() -> None:
    spec = replace(
        NUMBER,
        outbound_config={"address": SIP_SECRET, "transport": "tls"},
        secrets={"outbound_config.address": "${SIP_TRUNK}"},
    )
    answer = default(spec)
    ledger = owned(spec, answer)
    assert SIP_SECRET not in json.dumps(ledger.to_dict()) and "trunk-user" not in json.dumps(ledger.to_dict())
    assert plan_for(spec, answer, ledger).changes == []
    moved = copy.deepcopy(answer)
    moved["outbound_config"]["address"] = "other@sip.example.com"
    [change] = plan_for(spec, moved, ledger).changes
    [field] = change.fields
    assert field.to_dict() == {
        "path": "outbound_config.address",
        "before": "(sensitive)",
        "after": "${SIP_TRUNK}",
        "sensitive": True,
        "changed": True,
        "origin": DRIFT,
    }
    assert "other@" not in json.dumps(change.to_dict())


# --------------------------------------------------------------------------- adoption
@pytest.mark.parametrize("reading", sorted(READINGS))
def test_adoption_compares_the_fields_both_sides_have(reading: str) -> None:
    result = plan_for(NUMBER, READINGS[reading](default(NUMBER)), Ledger(salt=SALT))
    assert result.changes == [] and [str(a) for a in result.adopted] == ["phone_number/+14155550100"]


def test_adoption_differences_are_planned_with_a_reason_that_says_so() -> None:
    live = rebind(default(replace(NUMBER, label="Old label")), "pl_console")
    [change] = plan_for(NUMBER, live, Ledger(salt=SALT)).changes
    assert change.action is Action.REPLACE and change.reason.startswith("adopted (in the account, not yet owned")
    assert [(f.path, f.before, f.after) for f in change.fields] == [
        ("inbound_config.pipeline_id", "pl_console", "pl_a"),
        ("label", "Old label", "Sales"),
    ]


def test_canonical_sip_addresses() -> None:
    assert canonical_sip("Alice@SIP.example.com", "tls") == "alice@sip.example.com:5061"
    assert canonical_sip("sip.example.com", "udp") == "sip.example.com:5060"
    assert canonical_sip("sip.example.com:5080", "tls") == "sip.example.com:5080"
    assert canonical_sip("[2001:db8::1]", None) == "[2001:db8::1]:5060"
    assert canonical_sip("[2001:db8::1]:5070", None) == "[2001:db8::1]:5070"


# --------------------------------------------------------------------------- agents
AGENT = AgentSpec(
    name="lobby",
    app_id="app1",
    properties={"channel": "lobby", "token": "tok", "agent_rtc_uid": "7", "remote_rtc_uids": ["*"], "idle_timeout": 0},
)


def agent_ledger(entry: dict[str, Any]) -> Ledger:
    ledger = Ledger(salt=SALT)
    ledger.resources["agent/lobby"] = {
        "kind": "agent",
        "app_id": "app1",
        "instance_name": "lobby-0000aaaa",
        "channel": "lobby",
        "agent_rtc_uid": "7",
        "applied": applied_agent_essence(AGENT, SALT),
        "restarts": 0,
        **entry,
    }
    return ledger


OWNED = {"agent_id": "A1", "pending": False, "started_at": 1000}
PENDING = {"agent_id": None, "pending": True, "started_at": None, "attempted_at": 5000}


def test_an_idle_agent_is_alive_and_noted() -> None:
    live = Live({}, {"app1": (LiveAgent("app1", "A1", "IDLE", 1000),)})
    result = diff(Desired(Settings(), (), (AGENT,)), live, agent_ledger(OWNED))
    assert result.changes == [] and result.unchanged == 1
    assert result.notes == ["agent/lobby (agent A1) is IDLE (no user in its channel): it counts as alive and is not restarted"]
    probed = Live({}, {"app1": ()}, {"A1": AgentProbe("A1", "IDLE")})
    assert diff(Desired(Settings(), (), (AGENT,)), probed, agent_ledger(OWNED)).changes == []


def _pending_live(*found: LiveAgent) -> Live:
    return Live({}, {"app1": found}, pending={"agent/lobby": found})


def test_a_lost_start_found_alive_is_adopted_without_a_change() -> None:
    result = diff(Desired(Settings(), (), (AGENT,)), _pending_live(LiveAgent("app1", "B1", "RUNNING", 5001)), agent_ledger(PENDING))
    assert result.changes == [] and [str(a) for a in result.adopted] == ["agent/lobby"]
    assert result.resolved["agent/lobby"]["agent_id"] == "B1" and result.unmanaged == []


def test_a_lost_start_is_judged_by_what_it_was_started_with() -> None:
    moved = replace(AGENT, properties={**AGENT.properties, "channel": "hall"})
    live = _pending_live(LiveAgent("app1", "B1", "RUNNING", 5001))
    [change] = diff(Desired(Settings(), (), (moved,)), live, agent_ledger(PENDING)).changes
    assert change.action is Action.REPLACE and change.prior is not None and change.prior["agent_id"] == "B1"
    [gone] = diff(Desired(Settings(), (), ()), live, agent_ledger(PENDING)).changes
    assert gone.action is Action.DELETE and gone.disruptive and gone.prior is not None and gone.prior["agent_id"] == "B1"


def test_a_lost_start_with_nothing_alive_is_started_again_or_forgotten() -> None:
    [change] = diff(Desired(Settings(), (), (AGENT,)), _pending_live(), agent_ledger(PENDING)).changes
    assert change.action is Action.CREATE and "was interrupted and no agent it started is alive" in change.reason
    [gone] = diff(Desired(Settings(), (), ()), _pending_live(), agent_ledger(PENDING)).changes
    assert gone.action is Action.DELETE and not gone.disruptive


def test_several_candidates_for_a_lost_start_are_refused_naming_them() -> None:
    live = _pending_live(LiveAgent("app1", "B1", "RUNNING", 5001), LiveAgent("app1", "B2", "RUNNING", 5002))
    result = diff(Desired(Settings(), (), (AGENT,)), live, agent_ledger(PENDING))
    assert result.changes == [] and result.unmanaged == []
    [error] = result.errors
    assert "B1, B2" in error and "channel lobby" in error and "state adopt agent/lobby" in error
