"""Imports journaled ahead of their turn (issue 15): each number's pending entry is on disk before
its `POST add`, entries journaled ahead for changes a crash never started are resolved by the next
apply, and an interrupted run gives them back as they were. Real processes against `emulator serve`."""

from __future__ import annotations

from typing import Any

from ..conftest import Emulator
from ..e2e import Project, number_spec
from .helpers import assert_converged, seed_bystanders
from .test_ownership import crashed_run, owned

NEW = [f"+1415555{i:04d}" for i in range(200, 208)]


def test_sigkill_at_the_first_import_finds_its_entry_on_disk_and_the_next_apply_converges(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    before = owned(project)
    emu.admin("DELETE", "requests")
    project.numbers += [number_spec(n) for n in NEW]
    project.write()
    killed = crashed_run(
        project, api_env, "kill:reconciler.client:Client.add_number", "apply", str(project.path), "--auto-approve", "--parallelism", "1"
    )
    assert killed.returncode == -9, killed.stderr
    after = owned(project)
    journaled = {a for a in after if a not in before}
    assert f"phone_number/{NEW[0]}" in journaled, "the import being sent was journaled before its POST"
    assert all(after[a]["pending"] is True for a in journaled) and journaled <= {f"phone_number/{n}" for n in NEW}
    assert journaled == {f"phone_number/{n}" for n in NEW[:3]}, "journaled ahead in one write: the next 2 x parallelism imports too"
    assert {k: v for k, v in after.items() if k in before} == before
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)
    posts = [r for r in emu.requests() if r["method"] == "POST" and r["path"].endswith("phone-numbers")]
    assert len(posts) == len(NEW), "each new number imported once (the kill came before the first POST was sent)"


def test_an_interrupted_run_gives_back_the_entries_it_journaled_ahead(project: Project, emu: Emulator, api_env: dict[str, str]) -> None:
    project.numbers = [number_spec(n) for n in NEW]
    project.write()
    # SIGTERM at the start of the 3rd change: no change after it starts, though some were journaled ahead
    result = crashed_run(
        project, api_env, "term:reconciler.executor:Executor._apply:3", "apply", str(project.path), "--auto-approve", "--parallelism", "1"
    )
    assert result.returncode == 143, result.stderr
    ledger = owned(project)
    live = {f"phone_number/{n}" for n in emu.numbers()}
    assert set(ledger) == live and len(live) == 3, "what was done is owned; nothing not started is left pending"
    assert not any(e.get("pending") for e in ledger.values())
