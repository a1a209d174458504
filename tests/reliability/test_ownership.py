"""Nothing owned is ever lost (issue 10, items 9, 12, 13): journaled imports, a schema-checked
ledger, and no leftovers of a killed run. Real processes against `emulator serve`."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler import config
from reconciler.ledger import FileBackend

from ..conftest import Emulator
from ..e2e import Project, number_spec
from .helpers import assert_converged, seed_bystanders

NEW = "+14155550150"
ROOT = Path(__file__).resolve().parents[2]


def crashed_run(project: Project, api_env: dict[str, str], spec: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process that dies (or fails) at one exact point (see crashpoint.py)."""
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability.crashpoint", spec, "--", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **api_env, **project.env()},
        cwd=ROOT,
        timeout=120,
    )


def owned(project: Project) -> dict[str, Any]:
    """The ledger's resources as the tool reads them: the snapshot plus its journal."""
    return FileBackend(project.state).load().resources


def _add_new_number(project: Project, **extra: Any) -> None:
    project.numbers.append(number_spec(NEW, **extra))
    project.write()


def _then(how: str, project: Project, run: Any, emu: Emulator, bystander: str) -> None:
    """After an import whose binding never landed: finish it, or remove it from the YAML."""
    emu.admin("DELETE", "faults")
    if how == "remove":
        project.numbers = [n for n in project.numbers if n["phone_number"] != NEW]
        project.write()
        plan = json.loads(run("plan", str(project.path), "--format", "json").stdout)
        assert [(c["address"], c["action"], c["disruptive"]) for c in plan["changes"]] == [(f"phone_number/{NEW}", "delete", True)]
    else:
        project.numbers[-1]["inbound_config"]["pipeline_id"] = "pl_demo_support"
        project.write()
    result = run("apply", str(project.path), "--auto-approve")
    assert result.exit_code == 0, result.output
    assert (NEW in emu.numbers()) is (how == "finish")
    assert_converged(project, emu, run, bystander)
    assert not any(e.get("pending") for e in owned(project).values())


# --------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("then", ["finish", "remove"])
@pytest.mark.parametrize("fault", ["unknown pipeline", "503 on PATCH"])
def test_a_number_is_owned_once_imported_even_if_its_binding_fails(
    fault: str, then: str, project: Project, run: Any, emu: Emulator
) -> None:
    bystander = seed_bystanders(emu)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    if fault == "unknown pipeline":
        _add_new_number(project, inbound_config={"allowed_addresses": ["112.126.15.64/27"], "pipeline_id": "pl_no_such_pipeline"})
    else:
        _add_new_number(project)
        emu.fault(method="PATCH", path="phone-numbers/", status=503, count=100)
    failed = run("apply", str(project.path), "--auto-approve")
    assert failed.exit_code == 1 and "Apply finished with errors" in failed.stderr, failed.output
    assert NEW in emu.numbers(), "the import itself succeeded"
    entry = owned(project).get(f"phone_number/{NEW}")
    assert entry is not None and entry["pending"] is True, "owned from the moment the import succeeded"
    _then(then, project, run, emu, bystander)


@pytest.mark.parametrize("then", ["finish", "remove"])
def test_sigkill_between_import_and_binding_keeps_the_number_owned(
    then: str, project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    _add_new_number(project)
    killed = crashed_run(project, api_env, "kill:reconciler.client:Client.update_number", "apply", str(project.path), "--auto-approve")
    assert killed.returncode == -9, killed.stderr
    assert [r["method"] for r in emu.mutating()[-1:]] == ["POST"] and NEW in emu.numbers(), "killed after the import, before PATCH"
    assert owned(project)[f"phone_number/{NEW}"]["pending"] is True
    _then(then, project, run, emu, bystander)


def test_an_import_refused_by_the_api_leaves_no_ledger_entry(project: Project, run: Any, emu: Emulator) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    _add_new_number(project)
    emu.fault(method="POST", path="phone-numbers$", status=422, count=1)
    failed = run("apply", str(project.path), "--auto-approve")
    assert failed.exit_code == 1
    assert NEW not in emu.numbers() and f"phone_number/{NEW}" not in owned(project)


# --------------------------------------------------------------------------- item 12
CORRUPTIONS = {
    "agent_id is a number": (lambda r: r["agent/concierge"].__setitem__("agent_id", 12345), "entry 'agent/concierge', field agent_id"),
    "an entry is a list": (lambda r: r.__setitem__("phone_number/+14155550100", [1, 2]), "entry 'phone_number/+14155550100'"),
    "a key is not an address": (lambda r: r.__setitem__("concierge", dict(r["agent/concierge"])), "entry 'concierge'"),
    "protect is a string": (lambda r: r["phone_number/+14155550101"].__setitem__("protect", "yes"), "field protect"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_ledger_of_the_right_shape_but_wrong_types_is_refused_untouched(
    corruption: str, project: Project, run: Any, emu: Emulator
) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    doc = project.ledger()
    corrupt, named = CORRUPTIONS[corruption]
    corrupt(doc["resources"])
    project.state.write_text(json.dumps(doc, indent=1))
    before_bytes, before_stat = project.state.read_bytes(), project.state.stat()
    emu.admin("DELETE", "requests")
    for command in (("plan",), ("apply", "--auto-approve"), ("drift",)):
        result = run(*command[:1], str(project.path), *command[1:], "--format", "json")
        assert result.exit_code == 1, (command, result.output)
        assert json.loads(result.stdout)["error"]["reason"] == "ledger"
        assert "does not follow the ledger schema" in result.stderr and named in result.stderr, result.stderr
    listed = run("state", "list", "--state", str(project.state))
    assert listed.exit_code == 1 and named in listed.stderr
    assert emu.requests() == [], "refused before any API call"
    assert project.state.read_bytes() == before_bytes and project.state.stat().st_mtime_ns == before_stat.st_mtime_ns


def test_every_ledger_the_tool_writes_follows_the_schema(project: Project, run: Any, emu: Emulator) -> None:
    project.numbers[0]["protect"] = True
    project.numbers[1]["outbound_config"]["address"] = "alice:${SIP_PASSWORD}@sip.example.com"
    project.write()
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    doc = project.ledger()
    assert config.validate_ledger_document(doc) == []
    doc["resources"]["agent/concierge"]["observed"] = {"status": "RUNNING"}  # fields other helpers add are allowed
    doc["resources"]["agent/concierge"]["token_expires_at"] = 1790000000
    assert config.validate_ledger_document(doc) == []
    printed = run("schema", "--name", "ledger")
    assert printed.exit_code == 0 and json.loads(printed.stdout) == config.load_schema("ledger")


# --------------------------------------------------------------------------- item 13
@pytest.mark.parametrize("target", ["state.json", "state.json.backup"])
def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(
    target: str, project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    _add_new_number(project)
    killed = crashed_run(project, api_env, f"kill-replace:{target}", "apply", str(project.path), "--auto-approve")
    assert killed.returncode == -9, killed.stderr
    pattern = ".state.json.*.tmp" if target == "state.json" else ".state.json.backup.*.link"
    assert list(project.root.glob(pattern)), "the kill left a temp file behind"
    json.loads(project.state.read_text())  # the ledger itself is intact
    again = run("apply", str(project.path), "--auto-approve")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in project.root.iterdir() if p.name.startswith(".")) == [], "no leftovers"
    assert_converged(project, emu, run, bystander)


def test_the_errored_dump_is_valid_json_or_absent_on_a_full_disk(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str]
) -> None:
    bystander = seed_bystanders(emu)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    size = len(project.state.read_bytes())
    project.numbers += [number_spec(f"+141555501{i}") for i in range(50, 56)]
    project.write()

    def full_disk() -> None:  # RLIMIT_FSIZE stands for a full disk: writes past it fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))

    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", str(project.path), "--auto-approve"],
        capture_output=True,
        text=True,
        env={**os.environ, **api_env, **project.env()},
        preexec_fn=full_disk,
        timeout=120,
    )
    assert proc.returncode == 1 and "cannot write the ledger" in proc.stderr, proc.stderr
    errored = project.root / "state.json.errored"
    if errored.exists():
        json.loads(errored.read_text())  # never a truncated file
    else:
        assert "---- the ledger with everything applied so far" in proc.stderr
    assert list(project.root.glob(".state.json*.tmp")) == [], "a failed write removes its temp file"
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)
