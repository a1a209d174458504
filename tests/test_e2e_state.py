"""`export` and `state list|show|forget|adopt` end to end against the emulator."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .conftest import Emulator, agent_props
from .e2e import APP, SECRET_TOKEN, Project


def test_export_prints_a_document_that_validates_and_plans_clean(project: Project, run: Any, emu: Emulator, tmp_path: Any) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    exported = run("export", "--app-id", APP)
    assert exported.exit_code == 0
    doc = yaml.safe_load(exported.stdout)
    assert [n["phone_number"] for n in doc["phone_numbers"]] == ["+14155550100", "+14155550101"]
    assert doc["phone_numbers"][0]["inbound_config"]["pipeline_id"] == "pl_demo_support"
    assert "# 1 agent(s) running in app app-e2e: not exported" in exported.stdout
    exported_file = tmp_path / "exported" / "agora.yaml"
    exported_file.parent.mkdir()
    exported_file.write_text(exported.stdout)
    assert run("validate", str(exported_file)).exit_code == 0
    plan = run("plan", str(exported_file), "--state", str(tmp_path / "fresh.json"), "--detailed-exitcode")
    assert plan.exit_code == 0 and "2 numbers will be adopted" in plan.stdout


def test_state_list_show_forget(project: Project, run: Any, emu: Emulator) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    state = str(project.state)
    listed = run("state", "list", "--state", state)
    lines = listed.stdout.splitlines()
    assert lines[:2] == ["phone_number/+14155550100", "phone_number/+14155550101"] and lines[2].startswith("agent/concierge ")
    shown = json.loads(run("state", "show", "agent/concierge", "--state", state).stdout)
    assert shown["instance_name"].startswith("concierge-") and SECRET_TOKEN not in json.dumps(shown)
    assert shown["applied"]["properties"]["token"].startswith("hmac-sha256:")
    forgot = run("state", "forget", "phone_number/+14155550100", "--state", state)
    assert forgot.exit_code == 0 and "the account was not changed" in forgot.stderr
    assert "+14155550100" in emu.numbers()
    plan = run("plan", str(project.path))
    assert "1 number will be adopted" in plan.stdout
    missing = run("state", "show", "agent/nope", "--state", state)
    assert missing.exit_code == 1 and "is not in the ledger" in missing.stderr


def test_state_adopt_takes_over_a_running_agent(project: Project, run: Any, emu: Emulator) -> None:
    started = emu.seed(agents=[{"app_id": APP, "name": "concierge-started-by-hand", "preset": "p", "properties": agent_props("concierge")}])
    agent_id = started["agent_ids"][0]
    project.numbers = []
    project.write()
    adopted = run("state", "adopt", "agent/concierge", "--agent-id", agent_id, "-c", str(project.path), "--state", str(project.state))
    assert adopted.exit_code == 0, adopted.output
    entry = json.loads(project.state.read_text())["resources"]["agent/concierge"]
    assert entry["agent_id"] == agent_id and entry["instance_name"] == "concierge-started-by-hand"
    plan = run("plan", str(project.path), "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert len(emu.agents(APP)) == 1
