"""An import's pending entry is journaled at its own turn, on disk before its `POST add`, never
ahead of it (issue 15 tried that: a SIGKILL then left entries of imports never sent, claiming
numbers the tool never imported); an interrupted run leaves no pending entry for what it never
started. Real processes against `emulator serve`."""

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
    assert after[f"phone_number/{NEW[0]}"]["pending"] is True
    assert journaled == {f"phone_number/{NEW[0]}"}, "only the import being sent: nothing is journaled ahead of its turn"
    assert {k: v for k, v in after.items() if k in before} == before
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)
    posts = [r for r in emu.requests() if r["method"] == "POST" and r["path"].endswith("phone-numbers")]
    assert len(posts) == len(NEW), "each new number imported once (the kill came before the first POST was sent)"


def test_an_interrupted_run_leaves_no_pending_entry_for_what_it_never_started(
    project: Project, emu: Emulator, api_env: dict[str, str]
) -> None:
    project.numbers = [number_spec(n) for n in NEW]
    project.write()
    # SIGTERM at the start of the 3rd change: no change after it starts
    result = crashed_run(
        project, api_env, "term:reconciler.executor:Executor._apply:3", "apply", str(project.path), "--auto-approve", "--parallelism", "1"
    )
    assert result.returncode == 143, result.stderr
    ledger = owned(project)
    live = {f"phone_number/{n}" for n in emu.numbers()}
    assert set(ledger) == live and len(live) == 3, "what was done is owned; nothing not started is left pending"
    assert not any(e.get("pending") for e in ledger.values())
