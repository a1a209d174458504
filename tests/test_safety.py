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
