"""Attacks on imports journaled ahead of their turn (commit 9709f88, undone since): a SIGKILL while an earlier
change is at the API leaves the pending entries of imports that never started. Whatever the next
plan does with them must be what it would do had they never been journaled: an untouched number
is neither replaced nor reported. Real processes against `emulator serve`."""

from __future__ import annotations

import json
from typing import Any

from ..conftest import Emulator
from ..e2e import Project, number_spec
from .test_ownership import crashed_run, owned

NEW = "+14155550001"  # sorts before the numbers it goes with: its change is taken first
KILL_AT_FIRST_ADD = "kill:reconciler.client:Client.add_number"


def _plan(run: Any, project: Project) -> tuple[int, list[tuple[str, str]]]:
    result = run("plan", str(project.path), "--format", "json", "--detailed-exitcode")
    return result.exit_code, [(c["address"], c["action"]) for c in json.loads(result.stdout)["changes"]]


def test_a_replace_journaled_ahead_but_never_started_is_not_replaced_after_the_edit_is_reverted(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    project.settings["allow_replace"] = True
    project.write()
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    before = owned(project)
    original_label = project.numbers[1]["label"]
    project.numbers.insert(0, number_spec(NEW))  # create, taken first
    project.numbers[2]["label"] = "relabelled"  # replace, journaled ahead of its turn
    project.write()
    assert [a for _, a in _plan(run, project)[1]] == ["create", "replace"]
    killed = crashed_run(project, api_env, KILL_AT_FIRST_ADD, "apply", str(project.path), "--auto-approve", "--parallelism", "1")
    assert killed.returncode == -9, killed.stderr
    untouched = project.numbers[2]["phone_number"]
    assert emu.numbers()[untouched]["label"] == original_label, "the replace never started"
    # the user takes the relabel back: the number is exactly as declared and as last applied
    project.numbers[2]["label"] = original_label
    project.write()
    code, changes = _plan(run, project)
    assert (f"phone_number/{untouched}", "replace") not in changes, "an untouched number is not replaced"
    assert changes == [(f"phone_number/{NEW}", "create")]
    assert code == 2
    assert owned(project)[f"phone_number/{untouched}"] == before[f"phone_number/{untouched}"]


def test_a_create_journaled_ahead_but_never_started_leaves_nothing_to_report_once_removed(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    others = [number_spec(f"+1415555{i:04d}") for i in range(160, 163)]
    project.numbers += others
    project.write()
    killed = crashed_run(project, api_env, KILL_AT_FIRST_ADD, "apply", str(project.path), "--auto-approve", "--parallelism", "1")
    assert killed.returncode == -9, killed.stderr
    # the first import was being sent (it may land later: kept); the last one never started
    never_started = others[-1]["phone_number"]
    project.numbers = [n for n in project.numbers if n["phone_number"] != never_started]
    project.write()
    result = run("plan", str(project.path), "--format", "json", "--detailed-exitcode")
    doc = json.loads(result.stdout)
    assert not any(never_started in note for note in doc.get("notes", [])), doc.get("notes")
    assert not any(never_started in c["address"] for c in doc["changes"]), doc["changes"]
