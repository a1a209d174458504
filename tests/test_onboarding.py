"""Onboarding an existing account: `export` writes a valid document of the live numbers (quoted
E.164, the schema modeline, pipeline names and write-only placeholders as comments, running agents
as comments); plan on it shows no change; the first apply writes nothing and records ownership.
End to end against `emulator serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import Emulator, agent_props, number

APP = "app-onboard"
SIP_PASSWORD = "Sip-Pa55word-Onboard-31"


def existing_account(emu: Emulator) -> list[str]:
    trunk = {"address": "sip.example.com", "transport": "tls", "prefix": "6036", "user": "trunk-user", "password": SIP_PASSWORD}
    emu.seed(
        phone_numbers=[
            number(
                "+14155550200",
                label="Front desk",
                inbound_config={"allowed_addresses": ["112.126.15.64/27"], "pipeline_id": "pl_demo_support"},
                outbound_config={**trunk, "pipeline_id": "pl_demo_sales"},
            ),
            number("+14155550201", label="Sales", inbound_config={"pipeline_id": "pl_demo_sales"}),
            number("+14155550202", label="Fax: no bindings"),
            number(
                "+442071838750",
                provider="twilio",
                label="London",
                outbound=False,
                outbound_config={"address": "sip.example.co.uk", "transport": "udp"},
            ),
        ]
    )
    started = emu.seed(agents=[{"app_id": APP, "name": "legacy-concierge", "preset": "p", "properties": agent_props("lobby")}])
    agent_ids: list[str] = started["agent_ids"]
    return agent_ids


def test_export_onboards_an_existing_account_without_a_single_write(
    run: Any, emu: Emulator, api_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_ids = existing_account(emu)
    monkeypatch.chdir(tmp_path)
    exported = run("export", "--app-id", APP)
    assert exported.exit_code == 0, exported.stderr
    text = exported.stdout
    lines = text.splitlines()
    assert lines[0] == "# yaml-language-server: $schema=agora.schema.json"
    assert '  - phone_number: "+14155550200"' in lines and '  - phone_number: "+442071838750"' in lines  # quoted E.164
    assert "      pipeline_id: pl_demo_support  # pipeline: Support desk" in lines
    # the API names only the one pipeline of `associated_pipeline`; a name learnt from one number serves all
    assert lines.count("      pipeline_id: pl_demo_sales  # pipeline: Sales line") == 2
    assert '      password: "${SIP_PASSWORD_14155550200}"  # write-only: set SIP_PASSWORD_14155550200 (the API never returns it)' in lines
    assert "# Set these variables before plan/apply (SIP passwords are write-only): SIP_PASSWORD_14155550200" in lines
    assert f"# 1 agent(s) running in app {APP}: not exported, the API does not return their start" in lines
    assert any(line.startswith(f"#   {agent_ids[0]}  RUNNING  started ") for line in lines)
    assert SIP_PASSWORD not in text

    folder = tmp_path / "infra"
    folder.mkdir()
    (folder / "agora.yaml").write_text(text)
    (folder / "agora.schema.json").write_text(run("schema").stdout)  # the modeline's schema, self-contained
    schema = json.loads((folder / "agora.schema.json").read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(text))) == []

    unset = run("validate", str(folder))
    assert unset.exit_code == 1 and "SIP_PASSWORD_14155550200" in unset.stderr  # the placeholder must be set
    monkeypatch.setenv("SIP_PASSWORD_14155550200", SIP_PASSWORD)
    assert run("validate", str(folder)).exit_code == 0

    emu.admin("DELETE", "requests")
    plan = run("plan", str(folder), "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.startswith("4 numbers will be adopted") or "4 numbers will be adopted" in plan.stdout
    applied = run("apply", str(folder), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert emu.mutating() == [], "the first apply after export writes nothing"
    ledger = json.loads((folder / ".agora-reconciler" / "state.json").read_text())
    assert sorted(ledger["resources"]) == [f"phone_number/{n}" for n in ("+14155550200", "+14155550201", "+14155550202", "+442071838750")]
    assert SIP_PASSWORD not in json.dumps(ledger)
    assert run("plan", str(folder), "--detailed-exitcode").exit_code == 0
    # owned now: removing a number from the document plans its delete (it was only adopted before)
    doc = yaml.safe_load((folder / "agora.yaml").read_text())
    doc["phone_numbers"] = [n for n in doc["phone_numbers"] if n["phone_number"] != "+14155550201"]
    (folder / "agora.yaml").write_text(yaml.safe_dump(doc))
    removed = run("plan", str(folder), "--detailed-exitcode")
    assert removed.exit_code == 2 and "- phone_number/+14155550201" in removed.stdout
