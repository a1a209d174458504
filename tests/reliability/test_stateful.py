"""A hypothesis state machine: generated edits, crashes and applies under injected faults.

Rules edit the declaration, crash an owned agent, or apply (one change at a time, so the order of
calls is fixed) with drawn faults: 503s on a chosen kind of call, as many times as drawn (enough
to exhaust the client's retries or not). The invariant, checked in `teardown`, is the contract:
after one fault-free apply the plan is empty and the account is exactly the declaration plus the
untouched bystanders. Derandomized: the same schedules on every run, so the verdict never depends
on chance; an apply that fails must fail because of an injected fault.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..conftest import Emulator
from ..e2e import Project, agent_spec, number_spec
from .helpers import assert_converged, seed_bystanders

PHONES = [f"+1415777{i:04d}" for i in range(12)]
AGENTS = ["ava", "ben", "cleo", "dax", "eve"]
# (method, path regex) of every kind of call an apply makes
CALLS = [
    ("GET", "phone-numbers$"),
    ("GET", "/agents$"),
    ("GET", "/agents/[^/]+$"),
    ("POST", "phone-numbers$"),
    ("PATCH", "phone-numbers/"),
    ("DELETE", "phone-numbers/"),
    ("POST", "/join$"),
    ("POST", "/update$"),
    ("POST", "/leave$"),
]
FAULTS = st.lists(st.tuples(st.sampled_from(CALLS), st.integers(1, 6)), max_size=3)


@pytest.fixture
def machine_env(project: Project, run: Any, emu: Emulator) -> tuple[Project, Any, Emulator]:
    return project, run, emu


def build_machine(project: Project, run: Any, emu: Emulator) -> type[RuleBasedStateMachine]:
    class Reconciling(RuleBasedStateMachine):
        converged = 0  # examples whose teardown found the account converged

        @initialize()
        def start(self) -> None:
            emu.reset()
            emu.admin("POST", "config", {"stop_delay_s": 0.05})
            for leftover in project.root.glob("state.json*"):
                leftover.unlink()
            self.bystander = seed_bystanders(emu)
            project.settings["allow_replace"] = True
            project.settings["safety"] = {"max_delete_pct": 100, "min_existing": 1000}
            project.numbers = [number_spec(PHONES[0]), number_spec(PHONES[1])]
            project.agents = [agent_spec(AGENTS[0])]
            project.write()

        @rule(phone=st.sampled_from(PHONES))
        def add_number(self, phone: str) -> None:
            if phone not in {n["phone_number"] for n in project.numbers}:
                project.numbers.append(number_spec(phone))
                project.write()

        @precondition(lambda self: len(project.numbers) > 0)
        @rule(data=st.data())
        def edit_number(self, data: st.DataObject) -> None:
            spec = data.draw(st.sampled_from(project.numbers))
            what = data.draw(st.sampled_from(["inbound", "outbound", "label", "remove"]))
            if what == "remove":
                project.numbers.remove(spec)
            elif what == "label":
                spec["label"] = data.draw(st.sampled_from(["a", "b", "c"]))
            else:
                spec[f"{what}_config"]["pipeline_id"] = data.draw(st.sampled_from(["pl_demo_sales", "pl_demo_support", None]))
            project.write()

        @rule(name=st.sampled_from(AGENTS))
        def add_agent(self, name: str) -> None:
            if name not in {a["name"] for a in project.agents}:
                project.agents.append(agent_spec(name))
                project.write()

        @precondition(lambda self: len(project.agents) > 0)
        @rule(data=st.data())
        def edit_agent(self, data: st.DataObject) -> None:
            spec = data.draw(st.sampled_from(project.agents))
            what = data.draw(st.sampled_from(["params", "channel", "remove"]))
            if what == "remove":
                project.agents.remove(spec)
            elif what == "params":
                spec["properties"]["llm"]["params"] = {"model": data.draw(st.sampled_from(["m1", "m2", "m3"]))}
            else:
                spec["properties"]["channel"] = f"{spec['name']}-{data.draw(st.integers(0, 3))}"
            project.write()

        @rule(data=st.data())
        def crash_an_agent(self, data: st.DataObject) -> None:
            if not project.state.exists():
                return
            resources = json.loads(project.state.read_text())["resources"]
            owned = [resources[k]["agent_id"] for k in sorted(resources) if k.startswith("agent/") and resources[k].get("agent_id")]
            if owned:  # drawn by logical name (sorted addresses), never by the random agent ids
                emu.admin("POST", f"agents/{data.draw(st.sampled_from(owned))}/crash")

        @rule(faults=FAULTS)
        def apply_with_faults(self, faults: list[tuple[tuple[str, str], int]]) -> None:
            for (method, path), count in faults:
                emu.fault(method=method, path=path, status=503, count=count)
            try:
                # edits here are deliberate (--force); one change at a time: the calls come in a fixed order
                result = run("apply", str(project.path), "--auto-approve", "--force", "--parallelism", "1")
            finally:
                emu.admin("DELETE", "faults")
            assert "internal error" not in result.output, result.output
            assert result.exit_code in (0, 1), result.output
            if result.exit_code == 1:
                assert faults and "HTTP 503" in result.stderr, f"failed without an injected fault:\n{result.output}"

        @invariant()
        def ledger_always_parses(self) -> None:
            if project.state.exists():
                json.loads(project.state.read_text())

        def teardown(self) -> None:
            result = run("apply", str(project.path), "--auto-approve", "--force")
            assert result.exit_code == 0, result.output
            assert_converged(project, emu, run, self.bystander)
            type(self).converged += 1

    return Reconciling


def test_random_edits_crashes_and_faults_converge(machine_env: tuple[Project, Any, Emulator], tmp_path: Path) -> None:
    project, run, emu = machine_env
    machine = build_machine(project, run, emu)
    examples = int(os.environ.get("RELIABILITY_EXAMPLES", "6"))  # more for a longer local hunt
    machine.TestCase.settings = settings(
        max_examples=examples, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    machine.TestCase().runTest()
    # every example ran to a converged teardown (a failing one raises above); more when Hypothesis
    # first replays examples saved from an earlier failure
    assert machine.converged >= examples, f"only {machine.converged} of {examples} examples ran to a converged teardown"
