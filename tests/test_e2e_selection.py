"""`--target`/`--exclude` patterns that match nothing are typos (issue 10, item 17): an error naming
the pattern, exit 1, for plan, apply and drift; nothing is written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Emulator, number
from .e2e import Project


@pytest.mark.parametrize("command", ["plan", "drift", "apply"])
@pytest.mark.parametrize("flag", ["--target", "--exclude"])
def test_a_pattern_that_matches_nothing_is_an_error(project: Project, run: Any, emu: Emulator, command: str, flag: str) -> None:
    extra = ["--auto-approve"] if command == "apply" else []
    result = run(command, str(project.path), flag, "phone_number/+1415555O100", *extra)  # a letter O for a zero
    assert result.exit_code == 1, result.output
    assert f"Error: {flag} phone_number/+1415555O100 matches no resource (declared, owned or in the account)" in result.stderr
    assert result.stdout == "" and emu.mutating() == [] and not project.state.exists()


def test_the_error_names_every_unmatched_pattern_in_json(project: Project, run: Any, emu: Emulator) -> None:
    result = run("drift", str(project.path), "--format", "json", "--target", "agent/concierg", "--exclude", "agent/nobody*")
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["reason"] == "config"
    assert error["message"].startswith("--target agent/concierg, --exclude agent/nobody* matches no resource")


def test_patterns_match_declared_owned_and_live_resources(project: Project, run: Any, emu: Emulator) -> None:
    emu.seed(phone_numbers=[number("+19995550123", label="not ours")])
    declared = run("plan", str(project.path), "--target", "phone_number/+1415555010?")
    assert declared.exit_code == 0, declared.output
    live_only = run("plan", str(project.path), "--exclude", "phone_number/+19995550123")
    assert live_only.exit_code == 0, live_only.output
    applied = run("apply", str(project.path), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    project.numbers = project.numbers[:1]
    project.write()
    owned_only = run("plan", str(project.path), "--format", "json", "--target", "phone_number/+14155550101")
    assert owned_only.exit_code == 0, owned_only.output
    assert [c["action"] for c in json.loads(owned_only.stdout)["changes"]] == ["delete"]
