"""Planning end to end: the CLI against `emulator serve` over loopback, with a real ledger file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import Emulator, agent_props, basic_headers, number
from .e2e import APP, SECRET_KEY, SECRET_TOKEN, Project


@pytest.fixture
def applied(project: Project, run: Any, emu: Emulator) -> Project:
    result = run("apply", str(project.path), "--auto-approve")
    assert result.exit_code == 0, result.output
    return project


def plan_json(run: Any, project: Project, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run("plan", str(project.path), "--format", "json", "--detailed-exitcode", *extra)
    return result.exit_code, json.loads(result.stdout)


def actions(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["address"], c["action"]) for c in doc["changes"]]


def test_unchanged_account_plans_nothing_with_minimal_requests(applied: Project, run: Any, emu: Emulator) -> None:
    before = len(emu.requests())
    result = run("plan", str(applied.path), "--detailed-exitcode")
    assert result.exit_code == 0
    assert result.stdout == "No changes. The account matches the configuration. 3 unchanged, 0 unmanaged left alone.\n"
    made = emu.requests()[before:]
    assert sorted((r["method"], r["path"].rsplit("/", 1)[-1]) for r in made) == [("GET", "agents"), ("GET", "phone-numbers")]
    assert "from_time=" in made[[r["path"].endswith("agents") for r in made].index(True)]["query"]


def test_binding_changed_outside_the_tool_is_drift(applied: Project, run: Any, emu: Emulator) -> None:
    emu.session.patch(
        f"{emu.api}/v2/phone-numbers/+14155550100", json={"inbound_config": {"pipeline_id": "pl_demo_sales"}}, headers=_auth()
    )
    code, doc = plan_json(run, applied)
    assert code == 2 and actions(doc) == [("phone_number/+14155550100", "update")]
    change = doc["changes"][0]
    assert change["reason"].startswith("changed outside the tool (drift)")
    assert change["fields"] == [
        {"path": "inbound_config.pipeline_id", "before": "pl_demo_sales", "after": "pl_demo_support", "sensitive": False, "origin": "drift"}
    ]
    drift = run("drift", str(applied.path))
    assert drift.exit_code == 2 and "~ phone_number/+14155550100" in drift.stdout


def test_immutable_change_is_a_disruptive_replace_with_a_warning(applied: Project, run: Any) -> None:
    applied.numbers[1]["label"] = "Sales (new)"
    applied.write()
    code, doc = plan_json(run, applied)
    assert code == 2 and actions(doc) == [("phone_number/+14155550101", "replace")]
    assert doc["changes"][0]["disruptive"] is True
    assert doc["warnings"] == [
        "apply will refuse to replace phone_number/+14155550101 unless allow_replace (setting) or --allow-replace is given"
    ]


def test_crashed_agent_is_restarted(applied: Project, run: Any, emu: Emulator) -> None:
    agent_id = applied.ledger()["resources"]["agent/concierge"]["agent_id"]
    emu.admin("POST", f"agents/{agent_id}/crash")
    code, doc = plan_json(run, applied)
    assert code == 2 and actions(doc) == [("agent/concierge", "restart")]
    assert doc["changes"][0]["reason"] == f"agent is FAILED (agent {agent_id}: crashed (emulator admin)): start it again"


def test_agent_older_than_two_hours_is_not_restarted(applied: Project, run: Any, emu: Emulator) -> None:
    emu.advance(3 * 3600)
    code, doc = plan_json(run, applied)
    assert code == 0 and doc["changes"] == []


def test_undeclared_owned_number_is_deleted_and_unmanaged_ones_are_not(applied: Project, run: Any, emu: Emulator) -> None:
    emu.seed(
        phone_numbers=[number("+19995550000")],
        agents=[{"app_id": APP, "name": "stranger", "preset": "p", "properties": agent_props("elsewhere")}],
    )
    applied.numbers.pop(0)
    applied.write()
    code, doc = plan_json(run, applied)
    assert code == 2 and actions(doc) == [("phone_number/+14155550100", "delete")]
    assert doc["summary"]["unmanaged"] == 2
    assert {u["kind"] for u in doc["unmanaged"]} == {"phone_number", "agent"}
    assert run("apply", str(applied.path), "--auto-approve").exit_code == 0
    assert "+19995550000" in emu.numbers() and len(emu.agents(APP)) == 2


def test_failed_live_read_never_plans_deletes(applied: Project, run: Any, emu: Emulator) -> None:
    emu.fault(method="GET", path="phone-numbers$", status=503, count=50)
    before = len(emu.requests())
    result = run("plan", str(applied.path), "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["reason"] == "api"
    assert "cannot read live state" in result.stderr
    assert all(r["method"] == "GET" for r in emu.requests()[before:])


def test_second_page_failure_aborts_the_plan(applied: Project, run: Any, emu: Emulator) -> None:
    emu.seed(agents=[{"app_id": APP, "name": f"s{i}", "preset": "p", "properties": agent_props(f"c{i}")} for i in range(150)])
    emu.fault(method="GET", path="/agents$", latency_ms=0, count=1)  # page 1 passes
    emu.fault(method="GET", path="/agents$", status=503, count=50)  # page 2 fails
    before = len(emu.requests())
    result = run("plan", str(applied.path))
    assert result.exit_code == 1 and "cannot read live state" in result.stderr
    pages = [(r["status"], "cursor=" in r["query"]) for r in emu.requests()[before:] if r["path"].endswith("/agents")]
    assert pages[0] == (200, False) and all(page == (503, True) for page in pages[1:])


def test_target_and_exclude_filter_the_plan(applied: Project, run: Any) -> None:
    for n in applied.numbers:
        n["inbound_config"]["pipeline_id"] = "pl_demo_sales"
    applied.write()
    _, doc = plan_json(run, applied, "--target", "phone_number/*0101")
    assert actions(doc) == [("phone_number/+14155550101", "update")]
    _, doc = plan_json(run, applied, "--exclude", "phone_number/+14155550101")
    assert actions(doc) == [("phone_number/+14155550100", "update")]


def test_plans_are_deterministic(applied: Project, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    applied.numbers[0]["inbound_config"]["pipeline_id"] = None
    applied.agents.append({**applied.agents[0], "name": "second", "properties": {**applied.agents[0]["properties"], "channel": "two"}})
    applied.write()
    outputs = {fmt: {run("plan", str(applied.path), "--format", fmt).stdout for _ in range(3)} for fmt in ("text", "json", "markdown")}
    assert all(len(v) == 1 for v in outputs.values())


def test_drift_github_format_annotates_and_writes_the_step_summary(
    applied: Project, run: Any, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    agent_id = applied.ledger()["resources"]["agent/concierge"]["agent_id"]
    emu.admin("POST", f"agents/{agent_id}/crash")
    result = run("drift", str(applied.path), "--format", "github")
    assert result.exit_code == 2
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"::warning file={applied.path},line=") and "agent/concierge: restart" in first
    report = summary.read_text()
    assert report.startswith(f"<!-- agora-reconciler drift: {applied.path} -->\n") and "### agora-reconciler drift" in report


def test_plan_out_writes_a_schema_valid_plan_without_secrets(
    applied: Project, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTC_TOKEN", SECRET_TOKEN + "-rotated")
    out = tmp_path / "plan.json"
    result = run("plan", str(applied.path), "--out", str(out))
    assert result.exit_code == 0
    doc = json.loads(out.read_text())
    assert doc["ledger_serial"] == applied.ledger()["serial"] and doc["config_digest"].startswith("sha256:")
    assert [f["after"] for f in doc["changes"][0]["fields"]] == ["${RTC_TOKEN}"]
    text = out.read_text() + result.output
    assert SECRET_TOKEN not in text and SECRET_KEY not in text


def _auth() -> dict[str, str]:
    return basic_headers()


NOT_CONFIG = {"ci", "kubernetes", "grafana"}  # recipes and manifests, tested by their own tests
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples").iterdir() if p.name not in NOT_CONFIG)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_plans_against_the_emulator(example: Path, run: Any, api_env: dict[str, str], emu: Emulator, tmp_path: Path) -> None:
    result = run(
        "plan", str(example), "--endpoint", emu.url, "--state", str(tmp_path / "state.json"), "--format", "json", "--detailed-exitcode"
    )
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["create"] == len(doc["changes"]) > 0


def test_adoption_alone_is_not_a_change(project: Project, run: Any, emu: Emulator) -> None:
    declared = project.numbers[0]
    emu.seed(phone_numbers=[{**declared, "inbound": True, "outbound": True}])
    project.numbers, project.agents = [declared], []
    project.write()
    result = run("plan", str(project.path), "--detailed-exitcode")
    assert result.exit_code == 0, result.output
    assert "1 number will be adopted (already in the account, not yet owned)." in result.stdout
    assert result.stdout.endswith("No changes. The account matches the configuration. 1 unchanged, 0 unmanaged left alone.\n")
    applied = run("apply", str(project.path), "--auto-approve")
    assert applied.exit_code == 0 and "Recorded 1 adopted resource(s) in the ledger." in applied.stderr
    assert "phone_number/+14155550100" in project.ledger()["resources"] and emu.mutating() == []
