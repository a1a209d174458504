"""Safety gates count what will really be sent (issue 10, items 5-8), end to end with bystanders."""

from __future__ import annotations

import json
from typing import Any

from ..conftest import Emulator, basic_headers, number
from ..e2e import Project, number_spec
from .helpers import UNMANAGED_NUMBER, assert_converged, seed_bystanders


def _numbers(project: Project, count: int, start: int = 100) -> None:
    project.numbers = [number_spec(f"+1415555{i:04d}") for i in range(start, start + count)]
    project.write()


def _delete_outside(emu: Emulator, phone: str) -> None:
    response = emu.session.delete(f"{emu.api}/v2/phone-numbers/{phone}", headers=basic_headers(), timeout=30)
    assert response.status_code in (200, 204), response.text


def _writes_since(emu: Emulator, before: int) -> list[dict[str, Any]]:
    return [r for r in emu.requests()[before:] if r["method"] != "GET"]


def _hide_from_list(emu: Emulator, hidden: set[str]) -> None:
    """Every phone-number list answer lacks `hidden` (a truncated or wrong answer); they still exist."""
    shown = [doc for phone, doc in emu.numbers().items() if phone not in hidden]
    emu.fault(method="GET", path="phone-numbers$", body=shown, count=1000)


# --------------------------------------------------------------------------- item 5
def test_declaring_no_numbers_needs_force_even_when_some_owned_ones_are_gone(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    _numbers(project, 3)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    _delete_outside(emu, "+14155550100")  # one owned number vanished: it must not open the gate for the rest
    project.numbers = []
    project.write()
    before = len(emu.requests())
    refused = run("apply", str(project.path), "--auto-approve")
    assert refused.exit_code == 1, refused.output
    assert "declares no phone numbers and the plan deletes 2 of them" in refused.stderr
    assert _writes_since(emu, before) == []
    assert set(emu.numbers()) == {"+14155550101", "+14155550102", UNMANAGED_NUMBER}
    forced = run("apply", str(project.path), "--auto-approve", "--force")
    assert forced.exit_code == 0, forced.output
    assert_converged(project, emu, run, bystander)


# --------------------------------------------------------------------------- item 6
def test_pruning_every_live_number_needs_force(project: Project, run: Any, emu: Emulator) -> None:
    strangers = [f"+1888555{i:04d}" for i in range(3)]
    emu.seed(phone_numbers=[number(p, label="someone else's") for p in strangers])
    project.settings["prune"] = True
    _numbers(project, 1)
    plan = run("plan", str(project.path))
    assert "prune: true and the plan deletes every live phone number (3, 3 never owned by this tool)" in plan.output
    before = len(emu.requests())
    refused = run("apply", str(project.path), "--auto-approve")
    assert refused.exit_code == 1 and "deletes every live phone number" in refused.stderr, refused.output
    assert _writes_since(emu, before) == [] and set(strangers) <= set(emu.numbers())
    forced = run("apply", str(project.path), "--auto-approve", "--force")
    assert forced.exit_code == 0, forced.output
    assert set(emu.numbers()) == {"+14155550100"}


def test_pruning_more_than_max_delete_pct_of_live_numbers_needs_force(project: Project, run: Any, emu: Emulator) -> None:
    live = [f"+1415555{i:04d}" for i in range(100, 112)]
    emu.seed(phone_numbers=[number_spec(p) | {"inbound": True, "outbound": True} for p in live])
    project.settings["prune"] = True
    _numbers(project, 8)  # adopts 8 of the 12 live numbers; prune would delete the other 4 (33 %)
    before = len(emu.requests())
    refused = run("apply", str(project.path), "--auto-approve")
    assert refused.exit_code == 1, refused.output
    assert "deletes or replaces 4 of 12 owned or live phone numbers (33% > max_delete_pct 30%)" in refused.stderr
    assert _writes_since(emu, before) == [] and set(emu.numbers()) == set(live)
    assert run("apply", str(project.path), "--auto-approve", "--force").exit_code == 0
    assert set(emu.numbers()) == set(live[:8])


# --------------------------------------------------------------------------- item 7
def test_a_number_missing_from_the_list_is_never_deleted(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    _numbers(project, 3)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers.pop()  # +14155550102 is no longer declared ...
    project.write()
    _hide_from_list(emu, {"+14155550102"})  # ... and the list answer lacks it, though it exists
    plan = run("plan", str(project.path), "--format", "json")
    changes = json.loads(plan.stdout)["changes"]
    assert [(c["address"], c["action"], c["disruptive"]) for c in changes] == [("phone_number/+14155550102", "delete", False)]
    before = len(emu.requests())
    applied = run("apply", str(project.path), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert _writes_since(emu, before) == [], "an 'already gone' change only drops the ledger entry"
    assert "phone_number/+14155550102" not in project.ledger()["resources"]
    emu.admin("DELETE", "faults")
    assert "+14155550102" in emu.numbers()
    _delete_outside(emu, "+14155550102")  # forgotten, so unmanaged now: out of the way of the shared invariant
    assert_converged(project, emu, run, bystander)


def test_too_many_owned_numbers_missing_at_once_is_unsafe(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    _numbers(project, 12)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    hidden = {f"+1415555{i:04d}" for i in range(100, 104)}  # 4 of 12 (33 %): 2 declared, 2 no longer declared
    project.numbers = project.numbers[2:]
    project.write()
    owned = set(project.ledger()["resources"])
    _hide_from_list(emu, hidden)
    before = len(emu.requests())
    refused = run("apply", str(project.path), "--auto-approve", "--format", "json")
    assert refused.exit_code == 1 and json.loads(refused.stdout)["error"]["reason"] == "unsafe_plan", refused.output
    assert "4 of 12 owned phone numbers are missing from the account's list" in refused.stderr
    assert _writes_since(emu, before) == [] and set(project.ledger()["resources"]) == owned, "the ledger keeps them"
    emu.admin("DELETE", "faults")
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)


def test_an_empty_list_answer_never_forgets_every_owned_number(project: Project, run: Any, emu: Emulator) -> None:
    _numbers(project, 2)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers = project.numbers[:1]
    project.write()
    owned = project.ledger()["resources"]
    emu.fault(method="GET", path="phone-numbers$", body=[], count=1000)
    refused = run("apply", str(project.path), "--auto-approve")
    assert refused.exit_code == 1 and "2 of 2 owned phone numbers are missing from the account's list" in refused.stderr
    assert project.ledger()["resources"] == owned
    before = len(emu.requests())
    forced = run("apply", str(project.path), "--auto-approve", "--force")
    assert forced.exit_code == 0, forced.output
    writes = [r for r in _writes_since(emu, before) if r["path"].endswith("+14155550101")]
    assert [r["method"] for r in writes] == [], "forced: the undeclared one is forgotten, never deleted"
    emu.admin("DELETE", "faults")
    assert set(emu.numbers()) == {"+14155550100", "+14155550101"}


# --------------------------------------------------------------------------- item 8
def test_turning_protect_off_and_replacing_in_one_edit_is_refused(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    project.numbers[0]["protect"] = True
    project.write()
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.settings["allow_replace"] = True
    project.numbers[0]["protect"] = False
    project.numbers[0]["label"] = "relabelled"  # immutable: a replace
    project.write()
    before = len(emu.requests())
    refused = run("apply", str(project.path), "--auto-approve", "--force")
    assert refused.exit_code == 1, refused.output
    assert "phone_number/+14155550100 is protected (protect: true when last applied)" in refused.stderr
    assert _writes_since(emu, before) == [] and emu.numbers()["+14155550100"]["label"] == "line 0100"
    project.numbers[0]["label"] = "line 0100"  # step 1: protect off alone
    project.write()
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert project.ledger()["resources"]["phone_number/+14155550100"]["protect"] is False
    project.numbers[0]["label"] = "relabelled"  # step 2: the replace
    project.write()
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert emu.numbers()["+14155550100"]["label"] == "relabelled"
    assert_converged(project, emu, run, bystander)
