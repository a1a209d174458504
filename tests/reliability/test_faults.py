"""API faults, stale plans, concurrent runs and truncated declarations, with bystanders watching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Emulator
from ..e2e import APP, Project
from .helpers import UNMANAGED_NUMBER, assert_converged, base, mixed_edit, seed_bystanders


def _gaps(emu: Emulator, method: str, suffix: str) -> list[tuple[int, float]]:
    hits = [r for r in emu.requests() if r["method"] == method and r["path"].endswith(suffix)]
    return [(r["status"], r["ts"]) for r in hits]


def test_429_with_retry_after_on_list_and_patch(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    emu.fault(method="GET", path="phone-numbers$", status=429, retry_after=1, count=1)
    emu.fault(method="PATCH", path="phone-numbers/", status=429, retry_after=1, count=1)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    lists = _gaps(emu, "GET", "/phone-numbers")
    assert [s for s, _ in lists[:2]] == [429, 200] and lists[1][1] - lists[0][1] >= 1.0
    patches = [r for r in emu.requests() if r["method"] == "PATCH"]
    first_429 = next(i for i, r in enumerate(patches) if r["status"] == 429)
    retry = next(r for r in patches[first_429 + 1 :] if r["path"] == patches[first_429]["path"])
    assert retry["status"] == 200 and retry["ts"] - patches[first_429]["ts"] >= 1.0
    assert_converged(project, emu, run, bystander)


def test_429_on_creating_posts_is_retried_only_through_the_conflict_check(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    emu.fault(method="POST", path="/join$", status=429, retry_after=1, count=1)
    emu.fault(method="POST", path="phone-numbers$", status=429, retry_after=1, count=1)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    joins = _gaps(emu, "POST", "/join")
    assert [s for s, _ in joins].count(429) == 1 and len(joins) == 4, "the rejected start is sent again once, by the same name"
    imports = _gaps(emu, "POST", "/phone-numbers")
    assert [s for s, _ in imports].count(429) == 1 and len(imports) == 5, "the rejected import is sent again once"
    assert_converged(project, emu, run, bystander)


@pytest.mark.parametrize("where", ["phone list", "agents page 2"])
def test_a_failed_live_read_means_no_writes(where: str, project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    if where == "agents page 2":
        emu.seed(
            agents=[
                {
                    "app_id": APP,
                    "name": f"extra-{i}",
                    "preset": "p",
                    "properties": {"channel": f"x{i}", "token": "t", "agent_rtc_uid": "9", "remote_rtc_uids": ["*"], "idle_timeout": 0},
                }
                for i in range(120)
            ]
        )
        emu.fault(method="GET", path="/agents$", count=1)
        emu.fault(method="GET", path="/agents$", status=503, count=100)
    else:
        emu.fault(method="GET", path="phone-numbers$", status=503, count=100)
    project.numbers.pop()
    project.write()
    before = len(emu.mutating())
    for command in (("plan",), ("apply", "--auto-approve", "--force")):
        result = run(*command[:1], str(project.path), *command[1:])
        assert result.exit_code == 1 and "cannot read live state" in result.stderr
    assert len(emu.mutating()) == before
    emu.admin("DELETE", "faults")
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    if where == "phone list":
        assert_converged(project, emu, run, bystander)


def test_a_stale_saved_plan_writes_nothing(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    mixed_edit(project)
    saved = tmp_path / "plan.json"
    assert run("plan", str(project.path), "--out", str(saved)).exit_code == 0
    owned = json.loads(project.state.read_text())["resources"]["agent/alpha"]["agent_id"]
    emu.admin("POST", f"agents/{owned}/crash")
    before = len(emu.mutating())
    stale = run("apply", str(project.path), "--plan", str(saved))
    assert stale.exit_code == 1 and "the plan is stale" in stale.stderr
    assert len(emu.mutating()) == before
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)


def test_two_applies_at_once_never_interleave(project: Project, run: Any, emu: Emulator, api_env: dict[str, str]) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    emu.fault(latency_ms=30)
    env = {**os.environ, **api_env, **project.env()}
    command = [sys.executable, "-m", "reconciler", "apply", str(project.path), "--auto-approve"]
    waiting = [
        subprocess.Popen([*command, "--lock-timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    failing = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    results = [p.communicate(timeout=120) for p in [*waiting, failing]]
    codes = [p.returncode for p in [*waiting, failing]]
    assert codes[:2] == [0, 0], results
    assert codes[2] in (0, 1)
    if codes[2] == 1:
        assert "is locked by pid" in results[2][1]
    writes = [r for r in emu.mutating()]
    adds = [r for r in writes if r["method"] == "POST" and r["path"].endswith("phone-numbers")]
    joins = [r for r in writes if r["path"].endswith("/join")]
    assert len(adds) == 4 and len(joins) == 3, "one run did the work; the others found nothing to do"
    emu.admin("DELETE", "faults")
    assert_converged(project, emu, run, bystander)


def test_an_emptied_declaration_is_refused_then_forced(project: Project, run: Any, emu: Emulator) -> None:
    seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.numbers, project.agents = [], []
    project.write()
    before = len(emu.mutating())
    refused = run("apply", str(project.path), "--auto-approve")
    assert refused.exit_code == 1 and "declares no phone numbers" in refused.stderr and "declares no agents" in refused.stderr
    assert len(emu.mutating()) == before
    forced = run("apply", str(project.path), "--auto-approve", "--force")
    assert forced.exit_code == 0
    assert set(emu.numbers()) == {UNMANAGED_NUMBER} and len(emu.agents(APP)) == 1, "only the bystanders are left"


def test_faults_on_every_kind_of_call_then_a_clean_apply_converges(project: Project, run: Any, emu: Emulator) -> None:
    bystander = seed_bystanders(emu)
    base(project)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    mixed_edit(project)
    # fixed faults, one change at a time: the same calls fail on every run (no verdict by chance)
    rounds = [
        [("POST", "phone-numbers$", 1), ("PATCH", "phone-numbers/", 5), ("GET", "/agents$", 2)],
        [("POST", "/join$", 1), ("DELETE", "phone-numbers/", 5), ("POST", "/update$", 1)],
        [("POST", "/leave$", 5), ("GET", "/agents/[^/]+$", 3), ("POST", "phone-numbers$", 2)],
    ]
    for faults in rounds:
        for method, path, count in faults:
            emu.fault(method=method, path=path, status=503, count=count)
        result = run("apply", str(project.path), "--auto-approve", "--parallelism", "1")
        assert result.exit_code in (0, 1) and "internal error" not in result.output, result.output
        emu.admin("DELETE", "faults")
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert_converged(project, emu, run, bystander)
