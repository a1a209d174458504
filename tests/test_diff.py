"""The diff decisions as tables: which field change is an update, which a replace, and more."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from reconciler.diff import applied_agent_essence, applied_phone_essence, diff
from reconciler.ledger import Ledger
from reconciler.model import AgentProbe, AgentSpec, Desired, Live, LiveAgent, PhoneNumberSpec, Settings
from reconciler.plan import Action

SALT = "fixed-salt"

BASE_NUMBER = PhoneNumberSpec(
    phone_number="+14155550100",
    provider="byo",
    label="Sales",
    inbound_config={"allowed_addresses": ["10.0.0.0/8"]},
    outbound_config={"address": "alice:pw-1234@sip.example.com", "transport": "tls", "prefix": "9"},
    inbound_pipeline_id="pl_a",
    outbound_pipeline_id="pl_b",
)
BASE_AGENT = AgentSpec(
    name="lobby",
    app_id="app1",
    preset="p1",
    properties={
        "channel": "lobby",
        "token": "tok-1",
        "agent_rtc_uid": "1",
        "remote_rtc_uids": ["*"],
        "idle_timeout": 0,
        "llm": {
            "url": "https://llm",
            "api_key": "key-1",
            "system_messages": [{"role": "system", "content": "a"}],
            "params": {"model": "m"},
        },
        "mllm": {"params": {"voice": "v"}},
        "tts": {"vendor": "microsoft", "params": {"key": "k", "voice_name": "x"}},
    },
)


def live_number(spec: PhoneNumberSpec) -> dict[str, Any]:
    """What the API lists for a number imported from `spec` (password stripped)."""
    outbound = dict(spec.outbound_config)
    outbound.pop("password", None)
    if "@" in outbound.get("address", ""):
        user_info, host = outbound["address"].rsplit("@", 1)
        outbound["address"] = user_info.split(":")[0] + "@" + host
    return {
        "provider": spec.provider,
        "phone_number": spec.phone_number,
        "label": spec.label,
        "inbound": spec.inbound,
        "outbound": spec.outbound,
        "associated_pipeline": None,
        "inbound_config": {**spec.inbound_config, "pipeline_id": spec.inbound_pipeline_id},
        "outbound_config": {**outbound, "pipeline_id": spec.outbound_pipeline_id},
    }


def owned_ledger(numbers: list[PhoneNumberSpec] = (), agents: list[AgentSpec] = ()) -> Ledger:  # type: ignore[assignment]
    ledger = Ledger(salt=SALT)
    for n in numbers:
        ledger.resources[str(n.address)] = {"kind": "phone_number", "applied": applied_phone_essence(n, SALT), "protect": n.protect}
    for a in agents:
        ledger.resources[str(a.address)] = {
            "kind": "agent",
            "app_id": a.app_id,
            "agent_id": f"ID-{a.name}",
            "instance_name": f"{a.name}-00000000",
            "channel": a.channel,
            "applied": applied_agent_essence(a, SALT),
            "started_at": 1000,
        }
    return ledger


def desired(numbers: tuple[PhoneNumberSpec, ...] = (), agents: tuple[AgentSpec, ...] = ()) -> Desired:
    return Desired(Settings(), numbers, agents)


NUMBER_CASES = [
    ("label", {"label": "Support"}, Action.REPLACE),
    ("provider", {"provider": "twilio"}, Action.REPLACE),
    ("inbound flag", {"inbound": False}, Action.REPLACE),
    ("outbound flag", {"outbound": False}, Action.REPLACE),
    ("allowed_addresses", {"inbound_config": {"allowed_addresses": ["10.0.0.0/8", "192.168.0.0/16"]}}, Action.REPLACE),
    ("sip address", {"outbound_config": {**BASE_NUMBER.outbound_config, "address": "alice:pw-1234@sip2.example.com"}}, Action.REPLACE),
    (
        "sip password (write-only)",
        {"outbound_config": {**BASE_NUMBER.outbound_config, "address": "alice:pw-9999@sip.example.com"}},
        Action.REPLACE,
    ),
    ("transport", {"outbound_config": {**BASE_NUMBER.outbound_config, "transport": "udp"}}, Action.REPLACE),
    ("prefix", {"outbound_config": {**BASE_NUMBER.outbound_config, "prefix": "1"}}, Action.REPLACE),
    ("outbound password field", {"outbound_config": {**BASE_NUMBER.outbound_config, "password": "new-pass"}}, Action.REPLACE),
    ("inbound binding", {"inbound_pipeline_id": "pl_c"}, Action.UPDATE),
    ("outbound binding", {"outbound_pipeline_id": None}, Action.UPDATE),
    ("both bindings", {"inbound_pipeline_id": None, "outbound_pipeline_id": "pl_c"}, Action.UPDATE),
    ("nothing", {}, None),
    ("address order of allowed_addresses", {"inbound_config": {"allowed_addresses": ["10.0.0.0/8"]}}, None),
]


@pytest.mark.parametrize(("field", "change", "expected"), NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_number_field_classification(field: str, change: dict[str, Any], expected: Action | None) -> None:
    declared = replace(BASE_NUMBER, **change)
    live = Live({BASE_NUMBER.phone_number: live_number(BASE_NUMBER)}, {})
    result = diff(desired((declared,)), live, owned_ledger([BASE_NUMBER]))
    actions = [c.action for c in result.changes]
    assert actions == ([expected] if expected else [])
    if expected is Action.REPLACE:
        assert result.changes[0].disruptive


def _with(props_change: dict[str, Any]) -> AgentSpec:
    props = copy.deepcopy(dict(BASE_AGENT.properties))
    for path, value in props_change.items():
        node = props
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return replace(BASE_AGENT, properties=props)


AGENT_CASES = [
    ("token", _with({"token": "tok-2"}), Action.UPDATE),
    ("llm.system_messages", _with({"llm.system_messages": [{"role": "system", "content": "b"}]}), Action.UPDATE),
    ("llm.params", _with({"llm.params": {"model": "m2"}}), Action.UPDATE),
    ("llm.params key added", _with({"llm.params.max_tokens": 10}), Action.UPDATE),
    ("mllm.params", _with({"mllm.params": {"voice": "w"}}), Action.UPDATE),
    ("token and llm.params", _with({"token": "tok-3", "llm.params": {"model": "m3"}}), Action.UPDATE),
    ("channel", _with({"channel": "hall"}), Action.REPLACE),
    ("agent_rtc_uid", _with({"agent_rtc_uid": "2"}), Action.REPLACE),
    ("remote_rtc_uids", _with({"remote_rtc_uids": ["5"]}), Action.REPLACE),
    ("idle_timeout", _with({"idle_timeout": 60}), Action.REPLACE),
    ("llm.url", _with({"llm.url": "https://other"}), Action.REPLACE),
    ("llm.api_key", _with({"llm.api_key": "key-2"}), Action.REPLACE),
    ("tts", _with({"tts.params.voice_name": "y"}), Action.REPLACE),
    ("token and channel", _with({"token": "tok-2", "channel": "hall"}), Action.REPLACE),
    ("preset", replace(BASE_AGENT, preset="p2"), Action.REPLACE),
    ("pipeline_id", replace(BASE_AGENT, pipeline_id="pl_x"), Action.REPLACE),
    ("app_id", replace(BASE_AGENT, app_id="app2"), Action.REPLACE),
    ("nothing", BASE_AGENT, None),
]


@pytest.mark.parametrize(("field", "declared", "expected"), AGENT_CASES, ids=[c[0] for c in AGENT_CASES])
def test_agent_field_classification(field: str, declared: AgentSpec, expected: Action | None) -> None:
    live = Live({}, {"app1": (LiveAgent("app1", "ID-lobby", "RUNNING", 1000),)})
    result = diff(desired(agents=(declared,)), live, owned_ledger(agents=[BASE_AGENT]))
    assert [c.action for c in result.changes] == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("probe", "reason"),
    [
        (AgentProbe("ID-lobby", "FAILED", "crashed"), "agent is FAILED (agent ID-lobby: crashed): start it again"),
        (AgentProbe("ID-lobby", "STOPPED", "idle timeout"), "agent is STOPPED (agent ID-lobby: idle timeout): start it again"),
        (AgentProbe("ID-lobby", "GONE"), "agent is gone (agent ID-lobby is unknown to the API): start it again"),
    ],
)
def test_dead_agents_are_restarted_with_the_reason(probe: AgentProbe, reason: str) -> None:
    live = Live({}, {"app1": ()}, {"ID-lobby": probe})
    result = diff(desired(agents=(BASE_AGENT,)), live, owned_ledger(agents=[BASE_AGENT]))
    assert [(c.action, c.reason) for c in result.changes] == [(Action.RESTART, reason)]


def test_secrets_are_masked_in_field_changes() -> None:
    declared = replace(_with({"token": "tok-2", "llm.api_key": "key-2"}), secrets={"properties.token": "${TOKEN}"})
    live = Live({}, {"app1": (LiveAgent("app1", "ID-lobby", "RUNNING", 1000),)})
    change = diff(desired(agents=(declared,)), live, owned_ledger(agents=[BASE_AGENT])).changes[0]
    fields = {f.path: f for f in change.fields}
    assert fields["properties.token"].to_dict() == {
        "path": "properties.token",
        "before": "(sensitive)",
        "after": "${TOKEN}",
        "sensitive": True,
        "changed": True,
        "origin": "declaration",
    }
    assert fields["properties.llm.api_key"].after == "(sensitive)" and fields["properties.llm.api_key"].changed is True
    assert "tok-2" not in repr(change.to_dict()) and "key-2" not in repr(change.to_dict())


def test_unowned_numbers_are_adopted_unmanaged_or_pruned() -> None:
    other = replace(BASE_NUMBER, phone_number="+14155550199")
    live = Live({n.phone_number: live_number(n) for n in (BASE_NUMBER, other)}, {})
    result = diff(desired((BASE_NUMBER,)), live, Ledger(salt=SALT))
    assert result.changes == [] and [str(a) for a in result.adopted] == ["phone_number/+14155550100"]
    assert [(u.kind, u.key) for u in result.unmanaged] == [("phone_number", "+14155550199")]
    pruned = diff(desired((BASE_NUMBER,)), live, Ledger(salt=SALT), prune=True)
    assert [(c.action, c.key, c.reason) for c in pruned.changes] == [(Action.DELETE, "+14155550199", "not declared and prune: true")]


def test_owned_numbers_no_longer_declared_are_deleted_unless_protected() -> None:
    live = Live({BASE_NUMBER.phone_number: live_number(BASE_NUMBER)}, {})
    result = diff(desired(), live, owned_ledger([BASE_NUMBER]))
    assert [(c.action, c.reason) for c in result.changes] == [(Action.DELETE, "owned and no longer declared")]
    protected = diff(desired(), live, owned_ledger([replace(BASE_NUMBER, protect=True)]))
    assert protected.errors and "protected" in protected.errors[0]


def test_drift_of_a_binding_is_planned_back_with_a_drift_reason() -> None:
    drifted = live_number(BASE_NUMBER)
    drifted["inbound_config"]["pipeline_id"] = "pl_console"
    result = diff(desired((BASE_NUMBER,)), Live({BASE_NUMBER.phone_number: drifted}, {}), owned_ledger([BASE_NUMBER]))
    change = result.changes[0]
    assert change.action is Action.UPDATE and change.reason.startswith("changed outside the tool (drift)")
    assert [f.to_dict() for f in change.fields] == [
        {"path": "inbound_config.pipeline_id", "before": "pl_console", "after": "pl_a", "sensitive": False, "origin": "drift"}
    ]


def test_unmanaged_agents_are_listed_never_touched() -> None:
    live = Live({}, {"app1": (LiveAgent("app1", "ID-lobby", "RUNNING", 1), LiveAgent("app1", "STRANGER", "RUNNING", 1))})
    result = diff(desired(agents=(BASE_AGENT,)), live, owned_ledger(agents=[BASE_AGENT]))
    assert result.changes == [] and [(u.kind, u.key) for u in result.unmanaged] == [("agent", "STRANGER")]


def test_dropping_entries_of_gone_resources_is_not_unsafe() -> None:
    from reconciler.plan import Plan
    from reconciler.safety import SafetyPolicy, exposures, safety_violations

    gone = Live({}, {"app1": ()}, {"ID-lobby": AgentProbe("ID-lobby", "STOPPED")})
    ledger = owned_ledger(agents=[BASE_AGENT])
    result = diff(desired(), gone, ledger)
    assert [(c.action, c.disruptive) for c in result.changes] == [(Action.DELETE, False)]
    assert safety_violations(Plan(tuple(result.changes)), exposures(desired(), gone, ledger, prune=False), SafetyPolicy()) == []
    alive = Live({}, {"app1": (LiveAgent("app1", "ID-lobby", "RUNNING", 1),)})
    running = diff(desired(), alive, ledger)
    assert safety_violations(Plan(tuple(running.changes)), exposures(desired(), alive, ledger, prune=False), SafetyPolicy()) != []


def test_deepdiff_runs_only_for_resources_that_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    import deepdiff

    calls: list[int] = []
    real = deepdiff.DeepDiff

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(deepdiff, "DeepDiff", counting)
    numbers = [replace(BASE_NUMBER, phone_number=f"+1415555{i:04d}") for i in range(100)]
    live = Live({n.phone_number: live_number(n) for n in numbers}, {})
    ledger = owned_ledger(numbers)
    assert diff(desired(tuple(numbers)), live, ledger).changes == [] and calls == []
    changed = [replace(numbers[0], inbound_pipeline_id="pl_z"), *numbers[1:]]
    assert len(diff(desired(tuple(changed)), live, ledger).changes) == 1 and len(calls) == 1


def _fingerprinted_by_paths(value: Any, salt: str) -> Any:
    """The path-by-path walk (`fingerprint_secrets` with declared secrets that match nothing)."""
    from reconciler.diff import fingerprint_secrets

    return fingerprint_secrets(value, {"no.such.path": "${NONE}"}, salt)


def test_fingerprinting_without_declared_secrets_matches_the_path_walk() -> None:
    """The fast walk (no `${VAR}`s: only credential-named keys are secret) gives what the path walk gives."""
    from reconciler.diff import fingerprint_secrets

    doc = {
        "label": "front desk",
        "password": "hunter2-real-secret",
        "outbound_config": {"address": "sip.example.com", "auth": {"password": "s3cr3t-pw", "user": "u"}, "ports": [5060, 5061]},
        "list": [{"api_key": "sk-live-abcdef"}, {"plain": [1, {"token": "tok-xyz"}]}],
        "dotted.password": "in-a-dotted-key",
        "weird[0]": {"secret": "under-an-indexed-key"},
        "": {"x": 1},
    }
    fast = fingerprint_secrets(doc, {}, "salt-1")
    assert fast == _fingerprinted_by_paths(doc, "salt-1")
    text = repr(fast)
    for secret in ("hunter2-real-secret", "s3cr3t-pw", "sk-live-abcdef", "tok-xyz", "in-a-dotted-key", "under-an-indexed-key"):
        assert secret not in text
    assert fast["outbound_config"]["ports"] == [5060, 5061] and fast["outbound_config"]["ports"] is not doc["outbound_config"]["ports"]


def test_assumed_drift_still_reads_the_transport_for_an_unchanged_address() -> None:
    """An address equal in both forms drifts when the transport that gives its default port differs."""
    from reconciler.observed import drifted

    observed = {"outbound_config.address": "sip.example.com", "outbound_config.transport": "udp", "label": "a"}
    now = {"outbound_config.address": "sip.example.com", "outbound_config.transport": "tls", "label": "a"}
    assert drifted(observed, now, assumed=True) == ["outbound_config.address", "outbound_config.transport"]
    assert drifted(observed, {**now, "outbound_config.transport": "UDP"}, assumed=True) == []
    assert drifted(observed, {**observed, "label": "b"}, assumed=True) == ["label"]


def _summary(result: Any) -> list[tuple[str, str, tuple[tuple[str, Any, Any], ...]]]:
    return [(str(c.address), c.action.value, tuple((f.path, f.before, f.after) for f in c.fields)) for c in result.changes]


@pytest.mark.parametrize(("field", "change", "expected"), NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_kept_declared_forms_give_the_same_plan_and_follow_a_new_declaration(
    field: str, change: dict[str, Any], expected: Action | None
) -> None:
    """The loop's cache of declared forms: the same plan as without it, and a new declaration
    (another `Desired`) is compared as declared, never against the forms of the previous one."""
    from reconciler.diff import DeclaredForms

    live = Live({BASE_NUMBER.phone_number: live_number(BASE_NUMBER)}, {"app1": (LiveAgent("app1", "ID-lobby", "RUNNING", 1000),)})
    ledger = owned_ledger([BASE_NUMBER], [BASE_AGENT])
    cache = DeclaredForms()
    before = desired((BASE_NUMBER,), (BASE_AGENT,))
    assert diff(before, live, ledger, now=1000, cache=cache).changes == []
    assert len(cache) == 2
    assert diff(before, live, ledger, now=1000, cache=cache).changes == []  # served from the cache
    edited = desired((replace(BASE_NUMBER, **change),), (_with({"llm.params": {"model": "m2"}}),))
    cached, fresh = diff(edited, live, ledger, now=1000, cache=cache), diff(edited, live, ledger, now=1000)
    assert _summary(cached) == _summary(fresh)
    assert [c.action for c in cached.changes][:-1] == ([expected] if expected else [])
    assert cached.changes[-1].address == BASE_AGENT.address  # the agent's edit is seen too


def test_kept_declared_forms_follow_a_new_ledger_salt() -> None:
    """Fingerprints depend on the ledger's salt: another salt recomputes them (a write-only
    password then compares by its new fingerprint, not the cached one)."""
    from reconciler.diff import DeclaredForms

    live = Live({BASE_NUMBER.phone_number: live_number(BASE_NUMBER)}, {})
    spec = desired((BASE_NUMBER,))
    cache = DeclaredForms()
    assert diff(spec, live, owned_ledger([BASE_NUMBER]), cache=cache).changes == []
    resalted = Ledger(salt="another-salt")
    resalted.resources[str(BASE_NUMBER.address)] = {
        "kind": "phone_number",
        "applied": applied_phone_essence(BASE_NUMBER, "another-salt"),
        "protect": False,
    }
    assert diff(spec, live, resalted, cache=cache).changes == []  # stale fingerprints would read as a changed password
    stale = owned_ledger([BASE_NUMBER])  # the first salt again, but its password changed since
    stale.resources[str(BASE_NUMBER.address)]["applied"] = applied_phone_essence(
        replace(BASE_NUMBER, outbound_config={**BASE_NUMBER.outbound_config, "address": "alice:pw-9999@sip.example.com"}), SALT
    )
    assert [c.action for c in diff(spec, live, stale, cache=cache).changes] == [Action.REPLACE]
