"""The safety gate as a table: what counts (what is really sent), for both kinds of resource."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.diff import diff
from reconciler.model import AgentProbe, Live, LiveAgent
from reconciler.plan import Plan
from reconciler.safety import SafetyPolicy, exposures, safety_violations

from .test_diff import BASE_AGENT, BASE_NUMBER, desired, live_number, owned_ledger

NUMBERS = [replace(BASE_NUMBER, phone_number=f"+1415555{i:04d}") for i in range(12)]
AGENTS = [replace(BASE_AGENT, name=f"agent-{i}", properties={**BASE_AGENT.properties, "channel": f"c{i}"}) for i in range(3)]


def _gate(declared_numbers: int, live_numbers: int, agents_declared: int, agents_alive: int, prune: bool = False) -> list[str]:
    """Own every number of NUMBERS[:live_numbers] plus NUMBERS[live_numbers:4] (gone), and AGENTS."""
    owned = NUMBERS[:4]
    live = Live(
        {n.phone_number: live_number(n) for n in owned[:live_numbers]},
        {"app1": tuple(LiveAgent("app1", f"ID-{a.name}", "RUNNING", 1) for a in AGENTS[:agents_alive])},
        {f"ID-{a.name}": AgentProbe(f"ID-{a.name}", "STOPPED") for a in AGENTS[agents_alive:]},
    )
    want = desired(tuple(owned[:declared_numbers]), tuple(AGENTS[:agents_declared]))
    ledger = owned_ledger(owned, AGENTS)
    plan = Plan(tuple(diff(want, live, ledger, prune=prune).changes))
    return safety_violations(plan, exposures(want, live, ledger, prune=prune), SafetyPolicy())


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("numbers: all declared, all there", (4, 4, 3, 3), []),
        ("numbers: none declared, all there", (0, 4, 3, 3), ["declares no phone numbers and the plan deletes all 4 owned ones"]),
        ("numbers: none declared, one already gone", (0, 3, 3, 3), ["declares no phone numbers and the plan deletes 3 of them"]),
        ("numbers: none declared, all gone (only entries dropped)", (0, 0, 3, 3), ["4 of 4 owned phone numbers are missing"]),
        ("numbers: one of four gone, still declared", (4, 3, 3, 3), []),
        ("agents: none declared, all running", (4, 4, 0, 3), ["declares no agents and the plan deletes all 3 owned ones"]),
        ("agents: none declared, one stopped", (4, 4, 0, 2), ["declares no agents and the plan deletes 2 of them"]),
        ("agents: none declared, all stopped (proven by GET)", (4, 4, 0, 0), []),
    ],
)
def test_the_gate_counts_what_is_sent(case: str, args: tuple[int, int, int, int], expected: list[str]) -> None:
    problems = _gate(*args)
    assert len(problems) == len(expected), (case, problems)
    for problem, wanted in zip(problems, expected, strict=True):
        assert wanted in problem, (case, problem)


def test_pruned_numbers_count_against_every_live_number() -> None:
    strangers = [replace(BASE_NUMBER, phone_number=f"+1888555{i:04d}") for i in range(3)]
    live = Live({n.phone_number: live_number(n) for n in strangers}, {})
    want = desired((NUMBERS[0],))
    ledger = owned_ledger()
    plan = Plan(tuple(diff(want, live, ledger, prune=True).changes))
    problems = safety_violations(plan, exposures(want, live, ledger, prune=True), SafetyPolicy())
    assert problems == ["prune: true and the plan deletes every live phone number (3, 3 never owned by this tool)"]
    assert safety_violations(plan, exposures(want, live, ledger, prune=True), SafetyPolicy(max_delete_pct=100, min_existing=1)) != []


def test_staleness_says_what_moved_and_only_when_the_plan_differs() -> None:
    from reconciler.model import Address
    from reconciler.plan import Action, Change, staleness

    changes = tuple(Change(Address("phone_number", f"+1415555{i:04d}"), Action.CREATE, "not imported yet") for i in range(23))
    saved = Plan(changes, live_digest="sha256:" + "1" * 64, secrets_digest="scrypt:" + "a" * 32)
    assert staleness(saved, replace(saved, live_digest="sha256:" + "2" * 64)) is None, "an account change that changes no change"
    older = staleness(replace(saved, secrets_digest=""), saved)
    assert older is not None and older.moved == ("the plan file records no digest of the secrets (made by an older version)",)
    fresh = replace(saved, changes=changes[:1], live_digest="sha256:" + "2" * 64)
    stale = staleness(saved, fresh)
    assert stale is not None and stale.moved == ("the account changed (its live state differs)",)
    lines = stale.message().splitlines()
    assert lines[0] == "the plan is stale: the account changed (its live state differs). Run plan again."
    assert lines[2] == "  - phone_number/+14155550001: planned create, now nothing to do"
    assert len([x for x in lines if x.startswith("  - ")]) == 20 and lines[-1] == "  ... and 2 more differing change(s)"
