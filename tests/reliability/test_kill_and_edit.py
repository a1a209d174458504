"""SIGKILL mid-apply, then the declaration changes before the next apply: it must still converge.

The kill lands after the k-th mutating request the emulator logged (fixed k, 40 ms latency per
call); the edit is one of the changes a user makes next. Whatever the kill interrupted (an import
before its PATCH, a start whose answer was never recorded), the next apply of the edited
declaration must leave exactly the declaration plus the bystanders: one running agent per
declared name, no orphan, nothing unmanaged touched.

A start still in flight at the server when its client dies is the hard case: the API may execute
it after the next run has listed the account. `test_a_start_still_in_flight_when_killed_is_never_duplicated`
parks every join of the killed run in the emulator (a `hold` fault) until the test releases them,
after the next run has listed and applied: the order is fixed by the test, never by a clock.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from ..conftest import Emulator
from ..e2e import Project
from .helpers import assert_converged, base, seed_bystanders
from .test_crashes import _spawn_apply, kill_after_writes


def _move_channel(project: Project) -> None:
    project.agents[1]["properties"]["channel"] = "moved-room"


def _flip_protect(project: Project) -> None:
    project.numbers[0]["protect"] = True
    project.numbers[2]["label"] = "relabelled"  # a replace next to it: allowed, it is not protected
    project.settings["allow_replace"] = True


def _change_binding(project: Project) -> None:
    project.numbers[1]["inbound_config"]["pipeline_id"] = "pl_demo_sales"


def _nothing(project: Project) -> None:
    pass


# Removing a number or an agent whose import/start was in flight at the kill has its own test
# below (`test_removing_what_was_in_flight_at_the_kill_orphans_nothing`): the pending entry is kept
# until the request can no longer land, so a late landing is still owned and then removed.
EDITS: dict[str, Callable[[Project], None]] = {
    "channel": _move_channel,
    "protect": _flip_protect,
    "binding": _change_binding,
}


def _wait_until_held(emu: Emulator, proc: Any, n: int) -> None:
    """Block until `n` calls are parked by `hold` faults (the 60 s bound only stops a hung test)."""
    deadline = time.monotonic() + 60
    held = 0
    while held < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
        held = emu.admin("GET", "faults/held")["held"]
    assert held == n, f"{n} requests parked at the server before the kill (saw {held})"


def _parkable(emu: Emulator) -> int:
    """How many imports and starts the emulator has executed (a call is logged once it has run)."""
    return sum(1 for r in emu.requests() if r["method"] == "POST" and re.search(r"/(phone-numbers|join)$", r["path"]))


def _release_and_wait(emu: Emulator, n: int) -> None:
    """Let the `n` parked calls run and block until all of them have executed."""
    before = _parkable(emu)
    assert emu.admin("POST", "faults/release")["released"] == n
    deadline = time.monotonic() + 60
    while _parkable(emu) < before + n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _parkable(emu) == before + n, "every parked call executed after its release"
    assert emu.admin("GET", "faults/held")["held"] == 0


def _apply_until_done(project: Project, run: Any) -> None:
    first = run("apply", str(project.path), "--auto-approve")
    if first.exit_code != 0:  # only a stop still in flight may hold a replacement back: once more
        second = run("apply", str(project.path), "--auto-approve")
        assert second.exit_code == 0, first.output + second.output


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("k", [1, 3, 6])
def test_sigkill_then_an_edited_declaration_converges(
    k: int, edit: str, project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    base(project)  # 4 numbers (import + PATCH each) and 3 agents (join each): 11 writes from empty
    emu.fault(latency_ms=40)
    kill_after_writes(emu, lambda: _spawn_apply(project, api_env, "--parallelism", "2"), k)  # its last writes landed
    emu.admin("DELETE", "faults")
    EDITS[edit](project)
    project.write()
    _apply_until_done(project, run)
    assert_converged(project, emu, run, bystander)
    if edit == "protect":
        entry = json.loads(project.state.read_text())["resources"]["phone_number/+14155550100"]
        assert entry["protect"] is True


@pytest.mark.parametrize("edit", ["none", "channel", "binding"])
def test_a_start_still_in_flight_when_killed_is_never_duplicated(
    edit: str, project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    emu.fault(method="POST", path="/join$", hold=True, count=3)  # the killed run's three joins only
    proc = _spawn_apply(project, api_env, "--parallelism", "8")
    _wait_until_held(emu, proc, 3)  # every join reached the server and waits there
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "killed while its joins were parked, not finished"
    {"none": _nothing, "channel": _move_channel, "binding": _change_binding}[edit](project)
    project.write()
    _apply_until_done(project, run)  # lists while the killed run's joins are still parked
    _release_and_wait(emu, 3)  # they land now, after that run
    _apply_until_done(project, run)  # whatever landed late is settled now
    assert_converged(project, emu, run, bystander)


def test_removing_what_was_in_flight_at_the_kill_orphans_nothing(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    """Every import and start is held at the server when the apply is killed; the user then removes
    one number and one agent. The next apply lists before the held requests land: it must keep their
    pending entries (absence from a list proves nothing while a request can still land), and once
    they have landed a later apply deletes the number and stops the agent: nothing is left unowned."""
    bystander = seed_bystanders(emu)
    base(project)
    in_flight = len(project.numbers) + len(project.agents)
    emu.fault(method="POST", path="/phone-numbers$", hold=True, count=len(project.numbers))
    emu.fault(method="POST", path="/join$", hold=True, count=len(project.agents))
    proc = _spawn_apply(project, api_env, "--parallelism", "8")
    _wait_until_held(emu, proc, in_flight)  # every import and start reached the server and waits there
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    removed_number = project.numbers.pop()["phone_number"]
    removed_agent = project.agents.pop()["name"]
    project.write()
    first = run("apply", str(project.path), "--auto-approve")
    assert first.exit_code == 0, first.output
    listed = run("state", "list", "--state", str(project.state))
    assert f"phone_number/{removed_number}" in listed.output, listed.output  # kept while its import may still land
    assert f"agent/{removed_agent}" in listed.output, listed.output  # kept while its start may still land
    _release_and_wait(emu, in_flight)  # every parked request lands now
    _apply_until_done(project, run)
    assert_converged(project, emu, run, bystander)
    assert removed_number not in emu.numbers()
