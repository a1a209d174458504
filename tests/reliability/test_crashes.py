"""Crashes: SIGKILL mid-apply at every stage, lost join answers, a ledger that cannot be written."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ..conftest import Emulator
from ..e2e import APP, Project
from . import crashpoint
from .helpers import assert_converged, base, mixed_edit, seed_bystanders


def _spawn_apply(project: Project, api_env: dict[str, str], *extra: str, limit_file_size: int | None = None) -> subprocess.Popen[str]:
    def limit() -> None:
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(project.path), "--auto-approve", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **api_env, **project.env()},
        preexec_fn=limit,
    )


def kill_after_writes(emu: Emulator, spawn: Callable[[], subprocess.Popen[str]], k: int) -> None:
    """Start an apply with `spawn`, SIGKILL it once the emulator has logged `k` mutating requests
    (or the run ended first), then wait until the server has closed every connection the dead
    run had open: whatever it had sent is executed by then, so no late write lands on what the
    test does next (the 60 s bounds only stop a hung test)."""
    before = emu.connections()
    proc = spawn()
    deadline = time.monotonic() + 60
    while len(emu.mutating()) < k and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    emu.wait_closed(before)


@pytest.mark.parametrize("k", [1, 2, 4, 7, 10, 13])
def test_sigkill_after_the_kth_mutating_request(k: int, project: Project, run: Any, emu: Emulator, api_env: dict[str, str]) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    mixed_edit(project)
    emu.admin("DELETE", "requests")
    emu.fault(latency_ms=40)  # widen the window between a request and the ledger write
    kill_after_writes(emu, lambda: _spawn_apply(project, api_env, "--parallelism", "2"), k)
    emu.admin("DELETE", "faults")
    json.loads(project.state.read_text())  # the ledger parses after a kill at any moment
    plan = run("plan", str(project.path), "--format", "json")
    assert plan.exit_code == 0, plan.output
    left = {c["address"] for c in json.loads(plan.stdout)["changes"]}
    everything = {
        "phone_number/+14155550100",
        "phone_number/+14155550101",
        "phone_number/+14155550102",
        "phone_number/+14155550150",
        "phone_number/+14155550151",
        "agent/alpha",
        "agent/beta",
        "agent/gamma",
        "agent/newcomer",
    }
    assert left <= everything, "the next plan lists only what is left"
    resumed = run("apply", str(project.path), "--auto-approve")
    assert resumed.exit_code == 0, resumed.output
    assert_converged(project, emu, run, bystander)


@pytest.mark.parametrize("drops", [1, 2])
def test_lost_join_answers_never_duplicate_an_agent(drops: int, project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    emu.fault(method="POST", path="/join$", drop=True, count=drops)
    first = run("apply", str(project.path), "--auto-approve")
    assert first.exit_code in (0, 1)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)
    names = [emu.agent(APP, a["agent_id"])["name"] for a in emu.agents(APP)]
    assert sorted(n.rsplit("-", 1)[0] for n in names if n != "bystander") == ["alpha", "beta", "gamma"]


def test_a_full_disk_keeps_the_previous_ledger_and_dumps_what_was_done(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    before = project.state.read_text()
    mixed_edit(project)
    # RLIMIT_FSIZE stands for a full disk: any write past the size fails with EFBIG
    proc = _spawn_apply(project, api_env, limit_file_size=len(before) - 200)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert f"cannot write the ledger {project.state}" in stderr and "File too large" in stderr
    on_disk = json.loads(project.state.read_text())  # the last good version is intact and parses
    assert on_disk["lineage"] == json.loads(before)["lineage"] and on_disk["serial"] >= json.loads(before)["serial"]
    assert "---- the ledger with everything applied so far" in stderr, "dumped to stderr when .errored cannot be written"
    dumped = json.loads(stderr.split("(save it as the state file) ----\n", 1)[1].split("\n---- end of ledger ----", 1)[0])
    assert dumped["lineage"] == on_disk["lineage"] and dumped["resources"] != on_disk["resources"], "the dump holds what was not saved"
    recovered = run("apply", str(project.path), "--auto-approve")
    assert recovered.exit_code == 0, recovered.output
    assert_converged(project, emu, run, bystander)


def test_a_read_only_ledger_folder_is_reported_with_its_path(project: Project, run: Any, emu: Emulator) -> None:
    blocked = project.root / "blocked"
    blocked.write_text("a file where the ledger folder should be")
    project.settings["state"] = "blocked/state.json"
    project.write()
    result = run("apply", str(project.path), "--auto-approve")
    assert result.exit_code == 1 and f"{blocked / 'state.json'}" in result.stderr
    assert emu.mutating() == [], "nothing is applied when the ledger cannot even be read"


def test_a_sigkilled_apply_is_replayed_from_its_journal(project: Project, run: Any, emu: Emulator, api_env: dict[str, str]) -> None:
    """Every change reported before a SIGKILL is in the next run's ledger (snapshot + journal), never redone.

    The 10th binding PATCH never returns (crashpoint `hold`), so the run cannot end: the kill lands
    once the other nine changes are reported and the held call was reached (its number imported and
    journaled as pending), whatever the machine's speed."""
    from reconciler.ledger import FileBackend

    from ..e2e import number_spec

    project.agents = []
    everything = {f"phone_number/+1415555019{i}" for i in range(10)}
    project.numbers = [number_spec(f"+1415555019{i}") for i in range(10)]
    project.write()
    args = ("apply", str(project.path), "--auto-approve", "--parallelism", "2")
    held_call = project.root / "held"
    env = {**api_env, **project.env(), "CRASHPOINT_HELD": str(held_call)}
    proc = crashpoint.spawn("hold:reconciler.client:Client.update_number:10", *args, env=env)
    watchdog = threading.Timer(300, proc.kill)  # a bound for a broken run (readline returns ""), not a verdict
    watchdog.start()
    try:
        assert proc.stderr is not None
        reported: set[str] = set()
        lines: list[str] = []
        while len(reported) < 9:
            lines.append(proc.stderr.readline())
            assert lines[-1], f"the apply ended before reporting 9 changes: {lines}"
            if lines[-1].endswith(": created\n"):
                reported.add(lines[-1].split(":", 1)[0])
        while not held_call.exists():  # the 10th PATCH is reached once its number is imported
            assert proc.poll() is None, f"the apply ended before its 10th PATCH: {lines}"
            time.sleep(0.01)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not project.state.exists(), "nothing was compacted: the kill came before the end of the run"
    journal = project.root / "state.json.journal"
    assert journal.exists()
    replayed = FileBackend(project.state).load()
    (held,) = everything - reported
    assert set(replayed.resources) == everything and replayed.journaled >= 10, "every reported change and the held import are journaled"
    assert [a for a, e in replayed.resources.items() if e.get("pending")] == [held], "only the change in flight is pending"
    listed = run("state", "list", "--state", str(project.state))
    assert listed.exit_code == 0 and all(address in listed.output for address in everything)
    assert set(emu.numbers()) == {a.split("/", 1)[1] for a in everything}, "the held number was imported before its PATCH"
    emu.admin("DELETE", "requests")
    resumed = run("apply", str(project.path), "--auto-approve")
    assert resumed.exit_code == 0, resumed.output
    assert [(r["method"], r["path"].rsplit("/", 1)[1]) for r in emu.mutating()] == [("PATCH", held.split("/", 1)[1])], (
        "only the held binding is sent: no reported number is imported or bound again"
    )
    assert not journal.exists() and set(project.ledger()["resources"]) == everything
