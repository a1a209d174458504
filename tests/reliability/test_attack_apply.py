"""Attacks on apply's shortcuts that held (commits 9dbcca6, 9709f88): Ctrl-C gives back the owned
entry of a replace journaled ahead of its turn; a result is reported only once it is on disk, with
the writer lingering up to 50 ms; an API refusal mid-apply of an import journaled ahead drops only
its own entry. Real processes against `emulator serve`, each acting at an exact call."""

from __future__ import annotations

import json
from typing import Any

from ..conftest import Emulator
from ..e2e import Project, number_spec
from .helpers import assert_converged, seed_bystanders
from .test_ownership import crashed_run, owned

FIRST = "+14155550001"  # sorts before the declared numbers: its change is taken first
NEW = [f"+1415555{i:04d}" for i in range(170, 176)]


def test_ctrl_c_gives_back_the_owned_entry_of_a_replace_journaled_ahead(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    project.settings["allow_replace"] = True
    project.write()
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    replaced = f"phone_number/{project.numbers[1]['phone_number']}"
    before = owned(project)[replaced]
    project.numbers.insert(0, number_spec(FIRST))
    project.numbers[2]["label"] = "relabelled"
    project.write()
    result = crashed_run(
        project, api_env, "int:reconciler.executor:Executor._apply:1", "apply", str(project.path), "--auto-approve", "--parallelism", "1"
    )
    assert result.returncode == 130, result.stderr
    after = owned(project)
    assert after[replaced] == before, "the replace never started: its entry is what it was"
    assert not after[f"phone_number/{FIRST}"].get("pending"), "the change under way when Ctrl-C came finished"
    plan = json.loads(run("plan", str(project.path), "--format", "json").stdout)
    assert [(c["address"], c["action"]) for c in plan["changes"]] == [(replaced, "replace")]


def test_a_result_is_reported_only_once_its_entry_is_on_disk(project: Project, run: Any, emu: Emulator, api_env: dict[str, str]) -> None:
    bystander = seed_bystanders(emu)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers += [number_spec(n) for n in NEW]
    project.write()
    # SIGKILL as the first result is about to be shown: what it reports must be on disk already
    killed = crashed_run(
        project, api_env, "kill:reconciler.executor:Executor._report", "apply", str(project.path), "--auto-approve", "--parallelism", "4"
    )
    assert killed.returncode == -9, killed.stderr
    ledger = owned(project)
    landed = {f"phone_number/{n}" for n in emu.numbers() if n in NEW}
    assert landed <= set(ledger), "every number that landed is owned"
    assert any(not ledger[a].get("pending") for a in landed), "the change being reported is final on disk"
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)


def test_an_import_refused_mid_apply_drops_only_its_own_entry(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers += [number_spec(n) for n in NEW]
    project.write()
    emu.fault(method="POST", path="phone-numbers$", status=400, count=1)  # the first import, its followers journaled ahead
    failed = run("apply", str(project.path), "--auto-approve", "--parallelism", "1")
    assert failed.exit_code == 1, failed.output
    ledger = owned(project)
    live = set(emu.numbers())
    assert {n for n in NEW if n in live} == {n for n in NEW if f"phone_number/{n}" in ledger}, "owned is exactly what landed"
    assert len([n for n in NEW if n in live]) == len(NEW) - 1
    assert not any(e.get("pending") for e in ledger.values())
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)
