"""Shared pieces of the reliability scenarios: unmanaged bystanders and the convergence invariant."""

from __future__ import annotations

import json
from typing import Any

from ..conftest import Emulator, agent_props, basic_headers, number
from ..e2e import APP, Project, agent_spec, number_spec

UNMANAGED_NUMBER = "+19995550000"


def seed_bystanders(emu: Emulator) -> str:
    """An unmanaged number and an unmanaged agent that every scenario must leave alone."""
    result = emu.seed(
        phone_numbers=[number(UNMANAGED_NUMBER, label="not ours")],
        agents=[{"app_id": APP, "name": "bystander", "preset": "p", "properties": agent_props("bystander-room", uid="42")}],
    )
    agent_id: str = result["agent_ids"][0]
    return agent_id


def mixed_edit(project: Project) -> None:
    """From the base declaration: every action kind (create, update, replace, delete, restart aside)."""
    project.settings["allow_replace"] = True
    project.numbers[0]["inbound_config"]["pipeline_id"] = "pl_demo_sales"  # update
    project.numbers[1]["label"] = "relabelled"  # replace
    project.numbers.append(number_spec("+14155550150"))  # create
    project.numbers.append(number_spec("+14155550151"))  # create
    del project.numbers[2]  # delete
    project.agents[0]["properties"]["llm"]["params"] = {"model": "gpt-4o"}  # update in place
    project.agents[1]["properties"]["channel"] = "moved"  # replace
    del project.agents[2]  # delete (stop)
    project.agents.append(agent_spec("newcomer"))  # create
    project.write()


def base(project: Project) -> None:
    project.numbers = [number_spec(f"+1415555{i:04d}") for i in range(100, 104)]
    project.agents = [agent_spec("alpha"), agent_spec("beta"), agent_spec("gamma")]
    project.write()


def assert_converged(project: Project, emu: Emulator, run: Any, bystander: str) -> None:
    """After a fault-free apply: nothing to do, the account is the declaration plus the bystanders."""
    plan = run("plan", str(project.path), "--format", "json", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["changes"] == []
    # parses; absent only when nothing was ever owned (apply writes no ledger for nothing)
    ledger = json.loads(project.state.read_text()) if project.state.exists() else {"resources": {}}
    if not project.state.exists():
        assert not project.numbers and not project.agents
    declared = {n["phone_number"]: n for n in project.numbers}
    live = emu.numbers()
    assert set(live) == set(declared) | {UNMANAGED_NUMBER}, "no orphan and no missing number"
    for phone, spec in declared.items():
        assert live[phone]["label"] == spec["label"]
        assert live[phone]["inbound_config"]["pipeline_id"] == spec["inbound_config"]["pipeline_id"]
        assert live[phone]["outbound_config"]["pipeline_id"] == spec["outbound_config"]["pipeline_id"]
    assert live[UNMANAGED_NUMBER]["label"] == "not ours"
    running = {a["agent_id"] for a in emu.agents(APP)}
    owned = {k.split("/", 1)[1]: v for k, v in ledger["resources"].items() if k.startswith("agent/")}
    assert set(owned) == {a["name"] for a in project.agents}
    assert running == {e["agent_id"] for e in owned.values()} | {bystander}, "exactly one agent per logical name"
    for entry in owned.values():
        got = emu.session.get(f"{emu.api}/v2/projects/{APP}/agents/{entry['agent_id']}", headers=basic_headers(), timeout=10).json()
        assert got["name"] == entry["instance_name"] and entry["pending"] is False
    owned_numbers = {k for k in ledger["resources"] if k.startswith("phone_number/")}
    assert owned_numbers >= {f"phone_number/{p}" for p in declared}
    notes = json.loads(plan.stdout)["notes"]
    for kept in owned_numbers - {f"phone_number/{p}" for p in declared}:
        # an import that failed without a definite refusal (a 503) may still land: its pending entry
        # outlives the declaration for a while (diff.agents.IN_FLIGHT_S), and the plan says so
        assert ledger["resources"][kept]["pending"] is True and kept.split("/", 1)[1] not in live, kept
        assert any(n.startswith(f"{kept}: its import may still be in flight") for n in notes), (kept, notes)
