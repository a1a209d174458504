"""Attack on the plan fast paths with a secret inside a number's `allowed_addresses`: the essence
sorts that list, so a `${VAR}` declared at index 0 may sit at another index once sorted. Its value
(long enough to be redacted in free text, and one too short for that) must never reach stdout,
stderr, the plan file or the ledger, whatever the order; the plan shows the template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Emulator, basic_headers, run_process
from .e2e import Project

LONG = "10.9.8.7"  # sorts after 10.0.0.1: declared first, second once sorted
SHORT = "9.9.9.9"  # shorter than the free-text minimum: only its position masks it


@pytest.mark.parametrize("secret", [LONG, SHORT])
def test_a_secret_allowed_address_stays_secret_once_the_list_is_sorted(
    secret: str, project: Project, emu: Emulator, api_env: dict[str, str], tmp_path: Path
) -> None:
    project.numbers[0]["inbound_config"]["allowed_addresses"] = ["${ADDR_SECRET}", "10.0.0.1"]
    project.write()
    env = {**api_env, **project.env(), "ADDR_SECRET": secret}
    plan_file = tmp_path / "plan.json"
    outputs = [
        run_process("plan", str(project.path), "--format", fmt, "--out", str(plan_file), "-vv", env=env)
        for fmt in ("text", "json", "markdown")
    ]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    assert "${ADDR_SECRET}" in outputs[0].stdout
    applied = run_process("apply", str(project.path), "--auto-approve", "-vv", env=env)
    assert applied.exit_code == 0, applied.output
    again = run_process("plan", str(project.path), "--detailed-exitcode", env=env)
    assert again.exit_code == 0, again.output  # in sync: the fingerprints match the account
    texts = [r.stdout + r.stderr for r in (*outputs, applied, again)] + [plan_file.read_text(), project.state.read_text()]
    for text in texts:
        for form in (secret, json.dumps(secret)[1:-1]):
            assert form not in text.replace("10.9.8.70", ""), text


def test_a_secret_allowed_address_at_another_index_of_the_account_s_list_is_masked(
    project: Project, emu: Emulator, api_env: dict[str, str], tmp_path: Path
) -> None:
    """The number is imported again outside the tool with one more address: the account's list holds
    the secret at another index than the declaration; the drift line masks it there too."""
    project.numbers[0]["inbound_config"]["allowed_addresses"] = ["${ADDR_SECRET}", "10.0.0.1"]
    project.write()
    env = {**api_env, **project.env(), "ADDR_SECRET": SHORT}
    assert run_process("apply", str(project.path), "--auto-approve", env=env).exit_code == 0
    live = emu.numbers()["+14155550100"]
    emu.session.delete(f"{emu.api}/v2/phone-numbers/+14155550100", headers=basic_headers()).raise_for_status()
    live["inbound_config"]["allowed_addresses"] = ["10.0.0.1", "10.5.5.5", SHORT]
    live.pop("associated_pipeline", None)
    emu.seed(phone_numbers=[live])
    plan_file = tmp_path / "plan.json"
    results = [
        run_process("plan", str(project.path), "--format", fmt, "--out", str(plan_file), "--detailed-exitcode", env=env)
        for fmt in ("text", "json")
    ]
    results.append(run_process("drift", str(project.path), env=env))
    assert all(r.exit_code == 2 for r in results), [r.output for r in results]
    assert "inbound_config.allowed_addresses" in results[0].stdout and "${ADDR_SECRET}" in results[0].stdout
    for text in [r.stdout + r.stderr for r in results] + [plan_file.read_text(), project.state.read_text()]:
        assert SHORT not in text, text
