"""Upgrade of a ledger written before a secret allowed address (`${VAR}`) moved to its sorted index.

The code before that (6a9f096 and earlier) fingerprinted the item at the secret's *declared* index
of the sorted list, kept the secret in clear at its sorted index, and recorded the observed list in
clear. `old_layout` turns today's entry into those exact bytes (checked against a ledger 6a9f096
wrote: `["hmac-sha256:<fingerprint of 10.0.0.1>", "10.9.8.7"]` for `["${ADDR_SECRET}", "10.0.0.1"]`).
Today's code must read it as in sync (no replace, no API call), rewrite it in today's layout on the
next apply (the secret leaves the snapshot; the journal is compacted), and still replace on a real
edit, never showing the secret anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.secrets import fingerprint

from .conftest import Emulator, Result, run_process
from .e2e import Project

KEY = "phone_number/+14155550100"
PATH = "inbound_config.allowed_addresses"
LONG = "10.9.8.7"  # sorts after 10.0.0.1: declared first, second once sorted
SHORT = "9.9.9.9"  # shorter than the free-text minimum: only its position masks it


def old_layout(project: Project, declared: list[str], secret: str) -> dict[str, Any]:
    """Rewrite the number's ledger entry as 6a9f096 wrote it; returns today's entry (as it was)."""
    ledger = project.ledger()
    today = json.loads(json.dumps(ledger["resources"][KEY]))
    values = [secret if item == "${ADDR_SECRET}" else item for item in declared]
    ordered = sorted(values)
    secret_at = {i for i, item in enumerate(declared) if item == "${ADDR_SECRET}"}  # declared indices
    entry = ledger["resources"][KEY]
    entry["applied"]["inbound_config"]["allowed_addresses"] = [
        fingerprint(ledger["salt"], v) if i in secret_at else v for i, v in enumerate(ordered)
    ]
    entry["observed"][PATH] = ordered  # the observed list was recorded in clear
    project.state.write_text(json.dumps(ledger, indent=2))
    assert secret in project.state.read_text()
    return today


def setup(
    project: Project, emu: Emulator, api_env: dict[str, str], declared: list[str], secret: str
) -> tuple[dict[str, str], dict[str, Any]]:
    project.numbers[0]["inbound_config"]["allowed_addresses"] = declared
    project.write()
    env = {**api_env, **project.env(), "ADDR_SECRET": secret}
    applied = run_process("apply", str(project.path), "--auto-approve", env=env)
    assert applied.exit_code == 0, applied.output
    return env, old_layout(project, declared, secret)


def assert_hidden(secret: str, texts: list[str]) -> None:
    for text in texts:
        for form in (secret, json.dumps(secret)[1:-1]):
            assert form not in text.replace("10.9.8.70", ""), text


def outputs(results: list[Result]) -> list[str]:
    return [r.stdout + r.stderr for r in results]


@pytest.mark.parametrize(
    ("declared", "secret"),
    [
        (["${ADDR_SECRET}", "10.0.0.1"], LONG),  # the secret moves from index 0 to 1 once sorted
        (["${ADDR_SECRET}", "10.0.0.1"], SHORT),
        (["10.0.0.1", "${ADDR_SECRET}"], LONG),  # same index: only the observed list was in clear
    ],
)
def test_an_old_layout_entry_is_in_sync_and_the_next_apply_rewrites_it_without_the_secret(
    declared: list[str], secret: str, project: Project, emu: Emulator, api_env: dict[str, str], tmp_path: Path
) -> None:
    env, today = setup(project, emu, api_env, declared, secret)
    plan_file = tmp_path / "plan.json"
    plans = [
        run_process("plan", str(project.path), "--format", fmt, "--out", str(plan_file), "--detailed-exitcode", "-vv", env=env)
        for fmt in ("text", "json")
    ]
    assert [r.exit_code for r in plans] == [0, 0], outputs(plans)  # no replace: nothing to change
    drift = run_process("drift", str(project.path), env=env)
    assert drift.exit_code == 0, drift.output
    emu.admin("DELETE", "requests")
    applied = run_process("apply", str(project.path), "--auto-approve", "-vv", env=env)
    assert applied.exit_code == 0, applied.output
    assert emu.mutating() == []  # the ledger only: no API call
    entry = project.ledger()["resources"][KEY]
    assert entry["applied"] == today["applied"] and entry["observed"] == today["observed"]  # today's layout
    journal = project.state.with_name(project.state.name + ".journal")
    assert not journal.exists() or journal.read_text() == ""
    again = run_process("plan", str(project.path), "--detailed-exitcode", env=env)
    assert again.exit_code == 0, again.output
    serial = project.ledger()["serial"]
    assert run_process("apply", str(project.path), "--auto-approve", env=env).exit_code == 0
    assert project.ledger()["serial"] == serial, "rewritten once: a later apply with nothing to do writes nothing"
    # a real edit of the list is still a replace
    project.numbers[0]["inbound_config"]["allowed_addresses"] = [*declared, "10.0.0.2"]
    project.write()
    edited = run_process("plan", str(project.path), "--detailed-exitcode", env=env)
    assert edited.exit_code == 2 and "-/+ phone_number/+14155550100" in edited.stdout, edited.output
    backup = project.state.with_name(project.state.name + ".backup")
    texts = [*outputs([*plans, drift, applied, again, edited]), plan_file.read_text(), project.state.read_text()]
    assert_hidden(secret, [*texts, backup.read_text()])  # the previous version kept beside it holds no secret either


@pytest.mark.parametrize("secret", [LONG, SHORT])
def test_a_real_edit_on_an_old_layout_entry_is_a_replace_that_shows_no_secret(
    secret: str, project: Project, emu: Emulator, api_env: dict[str, str], tmp_path: Path
) -> None:
    """The secret sits at index 1 in clear in the old entry; the edit sorts it to index 0, so
    masking by index alone would show the old entry's item 1 in clear."""
    env, _ = setup(project, emu, api_env, ["${ADDR_SECRET}", "10.0.0.1"], secret)
    project.numbers[0]["inbound_config"]["allowed_addresses"] = ["${ADDR_SECRET}", "99.0.0.1"]
    project.write()
    plan_file = tmp_path / "plan.json"
    plans = [
        run_process("plan", str(project.path), "--format", fmt, "--out", str(plan_file), "--detailed-exitcode", "-vv", env=env)
        for fmt in ("text", "json", "markdown")
    ]
    assert [r.exit_code for r in plans] == [2, 2, 2], outputs(plans)
    assert "-/+ phone_number/+14155550100" in plans[0].stdout and "${ADDR_SECRET}" in plans[0].stdout
    refused = run_process("apply", str(project.path), "--auto-approve", env=env)
    assert refused.exit_code != 0 and "replace" in refused.output, refused.output
    assert_hidden(secret, [*outputs([*plans, refused]), plan_file.read_text()])
