"""SIGKILL mid-apply, then the declaration changes before the next apply: it must still converge.

The kill lands after the k-th mutating request the emulator logged (fixed k, 40 ms latency per
call); the edit is one of the changes a user makes next. Whatever the kill interrupted (an import
before its PATCH, a start whose answer was never recorded), the next apply of the edited
declaration must leave exactly the declaration plus the bystanders: one running agent per
declared name, no orphan, nothing unmanaged touched.

A start still in flight at the server when its client dies is the hard case: the API may execute
it after the next run has listed the account. `test_a_start_still_in_flight_when_killed_is_never_duplicated`
holds every join 3 s in the emulator, so the next run always lists before they land; a correct
tool passes whichever lands first.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from ..conftest import Emulator
from ..e2e import Project
from .helpers import assert_converged, base, seed_bystanders
from .test_crashes import _spawn_apply


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
    proc = _spawn_apply(project, api_env, "--parallelism", "2")
    deadline = time.monotonic() + 60
    while len(emu.mutating()) < k and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)  # requests the dead run left in flight land now (a late write is drift; held joins: the test below)
    emu.admin("DELETE", "faults")
    EDITS[edit](project)
    project.write()
    _apply_until_done(project, run)
    assert_converged(project, emu, run, bystander)
    if edit == "protect":
        entry = json.loads(project.state.read_text())["resources"]["phone_number/+14155550100"]
        assert entry["protect"] is True


HELD_S = 3.0


@pytest.mark.parametrize("edit", ["none", "channel", "binding"])
def test_a_start_still_in_flight_when_killed_is_never_duplicated(
    edit: str, project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    emu.fault(method="POST", path="/join$", latency_ms=int(HELD_S * 1000))  # held at the server, then executed
    proc = _spawn_apply(project, api_env, "--parallelism", "8")
    deadline = time.monotonic() + 60
    while len(emu.mutating()) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # every number written: the three joins are sent next
    ledger_has_three_pending = False
    while not ledger_has_three_pending and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
        journal = project.root / "state.json.journal"
        text = journal.read_text() if journal.exists() else ""
        ledger_has_three_pending = text.count('"pending":true') >= 3
    assert ledger_has_three_pending, "the three starts were journaled before the kill"
    time.sleep(0.2)  # the joins left the client (the journal is written before each POST)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    emu.admin("DELETE", "faults")
    {"none": _nothing, "channel": _move_channel, "binding": _change_binding}[edit](project)
    project.write()
    _apply_until_done(project, run)  # lists before the held joins land (they land HELD_S after they were sent)
    time.sleep(HELD_S + 0.5)  # let every held join land
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
    emu.fault(method="POST", path="/phone-numbers$", latency_ms=int(HELD_S * 1000))
    emu.fault(method="POST", path="/join$", latency_ms=int(HELD_S * 1000))
    proc = _spawn_apply(project, api_env, "--parallelism", "8")
    deadline = time.monotonic() + 60
    journaled = False
    while not journaled and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
        journal = project.root / "state.json.journal"
        text = journal.read_text() if journal.exists() else ""
        journaled = text.count('"pending":true') >= len(project.numbers) + len(project.agents)
    assert journaled, "every import and start was journaled before the kill"
    time.sleep(0.2)  # the requests left the client (each is journaled before its POST)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    emu.admin("DELETE", "faults")
    removed_number = project.numbers.pop()["phone_number"]
    removed_agent = project.agents.pop()["name"]
    project.write()
    first = run("apply", str(project.path), "--auto-approve")
    assert first.exit_code == 0, first.output
    listed = run("state", "list", "--state", str(project.state))
    assert f"phone_number/{removed_number}" in listed.output, listed.output  # kept while its import may still land
    assert f"agent/{removed_agent}" in listed.output, listed.output  # kept while its start may still land
    time.sleep(HELD_S + 0.5)  # let every held request land
    _apply_until_done(project, run)
    assert_converged(project, emu, run, bystander)
    assert removed_number not in emu.numbers()
