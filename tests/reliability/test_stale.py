"""Saved plans (issue 10, items 14 and 21): a changed secret makes one stale, and the refusal
says what moved (the configuration, the account or the ledger) and which changes differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Emulator
from ..e2e import SECRET_TOKEN, Project, agent_spec, number_spec
from .helpers import assert_converged, base, seed_bystanders

OTHER_TOKEN = "007eJxTYLh-rotated-token-55aa01"


def _saved_plan(project: Project, run: Any, tmp_path: Path) -> Path:
    saved = tmp_path / "plan.json"
    result = run("plan", str(project.path), "--out", str(saved))
    assert result.exit_code == 0, result.output
    return saved


def _refused(project: Project, run: Any, emu: Emulator, saved: Path, env: dict[str, str] | None = None) -> str:
    before = len(emu.mutating())
    result = run("apply", str(project.path), "--plan", str(saved), env=env)
    assert result.exit_code == 1 and "the plan is stale" in result.stderr, result.output
    assert len(emu.mutating()) == before, "a stale plan writes nothing"
    return result.stderr


# --------------------------------------------------------------------------- item 14
def test_a_saved_plan_is_stale_when_a_secret_value_changed(
    project: Project, run: Any, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    monkeypatch.setenv("DELTA_TOKEN", SECRET_TOKEN)
    project.agents.append(agent_spec("delta", token="${DELTA_TOKEN}"))  # only the new agent uses it
    project.write()
    saved = _saved_plan(project, run, tmp_path)
    stderr = _refused(project, run, emu, saved, env={"DELTA_TOKEN": OTHER_TOKEN})  # the same changes, another value
    assert "a secret's value changed" in stderr and "the configuration changed" not in stderr
    assert OTHER_TOKEN not in stderr
    text = saved.read_text()
    assert SECRET_TOKEN not in text and OTHER_TOKEN not in text and '"secrets_digest": "scrypt:' in text
    applied = run("apply", str(project.path), "--plan", str(saved))  # the value the plan was made with
    assert applied.exit_code == 0, applied.output
    assert_converged(project, emu, run, bystander)


def test_a_saved_plan_made_without_a_ledger_is_checked_too(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    saved = _saved_plan(project, run, tmp_path)
    assert not project.state.exists()
    _refused(project, run, emu, saved, env={"RTC_TOKEN": OTHER_TOKEN})
    assert run("apply", str(project.path), "--plan", str(saved)).exit_code == 0


# --------------------------------------------------------------------------- item 21
def test_the_refusal_names_the_configuration(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers[0]["inbound_config"]["pipeline_id"] = "pl_demo_sales"
    project.write()
    saved = _saved_plan(project, run, tmp_path)
    project.numbers[1]["inbound_config"]["pipeline_id"] = "pl_demo_sales"
    project.write()
    stderr = _refused(project, run, emu, saved)
    assert "the configuration changed" in stderr
    assert "the account changed" not in stderr and "the ledger moved" not in stderr
    assert "  - phone_number/+14155550101: not in the plan, now update" in stderr


def test_the_refusal_names_the_account(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers[0]["inbound_config"]["pipeline_id"] = "pl_demo_sales"
    project.write()
    saved = _saved_plan(project, run, tmp_path)
    emu.admin("POST", f"agents/{project.ledger()['resources']['agent/alpha']['agent_id']}/crash")
    stderr = _refused(project, run, emu, saved)
    assert "the account changed" in stderr
    assert "the configuration changed" not in stderr and "the ledger moved" not in stderr
    assert "  - agent/alpha: not in the plan, now restart" in stderr


def test_the_refusal_names_the_ledger(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers[0]["inbound_config"]["pipeline_id"] = "pl_demo_sales"
    project.write()
    saved = _saved_plan(project, run, tmp_path)
    serial = project.ledger()["serial"]
    assert run("state", "forget", "phone_number/+14155550103", "--state", str(project.state)).exit_code == 0
    stderr = _refused(project, run, emu, saved)
    assert f"the ledger moved from serial {serial} to {serial + 1}" in stderr
    assert "the configuration changed" not in stderr and "the account changed" not in stderr


def test_the_refusal_lists_at_most_20_differing_changes(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    project.numbers = [number_spec(f"+1415555{i:04d}") for i in range(200, 225)]
    project.agents = []
    project.write()
    saved = _saved_plan(project, run, tmp_path)
    for n in project.numbers:
        n["label"] = "renamed before apply"
    project.write()
    stderr = _refused(project, run, emu, saved)
    listed = [line for line in stderr.splitlines() if line.startswith("  - phone_number/")]
    assert len(listed) == 20 and listed[0].startswith("  - phone_number/+14155550200: create with different details")
    assert "  ... and 5 more differing change(s)" in stderr
    assert json.loads(saved.read_text())["summary"]["create"] == 25
