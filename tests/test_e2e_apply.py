"""Applying end to end against `emulator serve`: actions, recovery, gates, locks, signals, secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler import config, reconcile
from reconciler.client import Client, Credentials, resolve_endpoint
from reconciler.executor import Executor
from reconciler.ledger.journal import LedgerJournal

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator, basic_headers, run_process
from .e2e import APP, SECRET_KEY, SECRET_SIP, SECRET_TOKEN, Project, agent_spec, number_spec
from .reliability import crashpoint

ROOT = Path(__file__).resolve().parent.parent


def apply(run: Any, project: Project, *extra: str) -> Any:
    return run("apply", str(project.path), "--auto-approve", *extra)


def settled(run: Any, project: Project) -> None:
    result = run("plan", str(project.path), "--detailed-exitcode")
    assert result.exit_code == 0, result.output


def test_apply_from_empty_then_again_is_a_no_op(project: Project, run: Any, emu: Emulator) -> None:
    first = apply(run, project)
    assert first.exit_code == 0, first.output
    assert "Apply complete: 3 created." in first.stderr
    numbers = emu.numbers()
    assert numbers["+14155550100"]["inbound_config"]["pipeline_id"] == "pl_demo_support"
    assert numbers["+14155550100"]["outbound_config"]["pipeline_id"] == "pl_demo_sales"
    assert len(emu.agents(APP)) == 1
    ledger = project.ledger()
    assert ledger["resources"]["agent/concierge"]["instance_name"].startswith("concierge-")
    before = len(emu.requests())
    again = apply(run, project)
    assert again.exit_code == 0 and "Nothing to apply." in again.stderr
    assert [r for r in emu.requests()[before:] if r["method"] != "GET"] == []


def test_every_action_kind_converges(project: Project, run: Any, emu: Emulator) -> None:
    assert apply(run, project).exit_code == 0
    project.agents.append(agent_spec("doomed", channel="doomed"))
    assert apply(run, project.write() and project).exit_code == 0
    crashed = project.ledger()["resources"]["agent/concierge"]["agent_id"]
    emu.admin("POST", f"agents/{crashed}/crash")  # -> restart
    project.numbers[0]["inbound_config"]["pipeline_id"] = "pl_demo_sales"  # -> update
    project.numbers[1]["label"] = "Sales v2"  # -> replace
    project.numbers.append(number_spec("+14155550102"))  # -> create
    project.agents.pop()  # doomed -> delete (stop)
    project.write()
    plan = run("plan", str(project.path), "--format", "json")
    kinds = sorted(c["action"] for c in json.loads(plan.stdout)["changes"])
    assert kinds == ["create", "delete", "replace", "restart", "update"]
    result = apply(run, project, "--allow-replace")
    assert result.exit_code == 0, result.output
    assert "Apply complete:" in result.stderr
    settled(run, project)
    assert emu.numbers()["+14155550101"]["label"] == "Sales v2"
    assert project.ledger()["resources"]["agent/concierge"]["restarts"] == 1
    # agent update in place: token rotation is one POST update, no stop
    os.environ["RTC_TOKEN"] = SECRET_TOKEN + "-rotated"
    try:
        before = len(emu.requests())
        assert apply(run, project).exit_code == 0
        mutating = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in emu.requests()[before:] if r["method"] != "GET"]
        assert mutating == [("POST", "update")]
        settled(run, project)
    finally:
        os.environ["RTC_TOKEN"] = SECRET_TOKEN


def test_409_on_add_adopts_the_existing_number(project: Project, emu: Emulator) -> None:
    desired = config.load([str(project.path)])
    options = reconcile.resolve_options(desired, {})
    client = Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET))
    session = reconcile.Session.open(desired, client, options)
    planned = reconcile.build_plan(session)
    body = desired.phone_numbers[0].import_body()
    assert emu.session.post(f"{emu.api}/v2/phone-numbers", json=body, headers=basic_headers()).status_code == 201
    report = Executor(client, LedgerJournal(session.backend, planned.ledger)).run(planned.plan)
    assert report.failures == [] and len(report.succeeded) == 3
    statuses = [(r["method"], r["status"]) for r in emu.requests() if r["path"].endswith("phone-numbers")]
    assert ("POST", 409) in statuses
    assert "phone_number/+14155550100" in session.backend.load().resources  # in the journal until the use case compacts


def test_dropped_join_response_leaves_exactly_one_agent(project: Project, run: Any, emu: Emulator) -> None:
    emu.fault(method="POST", path="/join$", drop=True, count=1)
    emu.fault(method="POST", path="/join$", status=503, count=10)
    first = apply(run, project)
    assert first.exit_code == 1 and "Apply finished with errors" in first.stderr
    entry = project.ledger()["resources"]["agent/concierge"]
    assert entry["pending"] is True and entry["agent_id"] is None
    emu.admin("DELETE", "faults")
    plan = run("plan", str(project.path))
    # resolved against the journaled attempt: the agent it started is found, not started again
    assert "1 agent will be adopted" in plan.stdout and plan.exit_code == 0
    second = apply(run, project)
    assert second.exit_code == 0, second.output
    agents = emu.agents(APP)
    assert len(agents) == 1
    assert project.ledger()["resources"]["agent/concierge"]["agent_id"] == agents[0]["agent_id"]
    settled(run, project)


def test_503_on_one_change_leaves_the_others_applied(project: Project, run: Any, emu: Emulator) -> None:
    emu.fault(method="POST", path="phone-numbers$", status=503, count=4)
    emu.fault(method="POST", path="phone-numbers$", latency_ms=0, count=0)
    result = run("apply", str(project.path), "--auto-approve", "--parallelism", "1", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["reason"] == "partial_apply"
    assert "Apply finished with errors" in result.stderr and "HTTP 503" in result.stderr
    ledger = project.ledger()["resources"]
    live = emu.numbers()
    settled_numbers = {k for k, v in ledger.items() if k.startswith("phone_number/") and not v.get("pending")}
    assert settled_numbers == {f"phone_number/{n}" for n in live}, "a failed import stays pending: its outcome is unknown"
    assert "agent/concierge" in ledger and ledger["agent/concierge"]["agent_id"]
    again = apply(run, project)
    assert again.exit_code == 0, again.output
    settled(run, project)


def test_stale_saved_plan_is_refused_and_a_fresh_one_applies(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert run("plan", str(project.path), "--out", str(out)).exit_code == 0
    emu.session.post(
        f"{emu.api}/v2/phone-numbers",
        json={**number_spec("+14155550100"), "inbound_config": {}, "outbound_config": {}},
        headers=basic_headers(),
    )
    before = len(emu.requests())
    stale = run("apply", str(project.path), "--plan", str(out), "--format", "json")
    assert stale.exit_code == 1 and json.loads(stale.stdout)["error"]["reason"] == "stale_plan"
    assert "the plan is stale" in stale.stderr
    assert [r for r in emu.requests()[before:] if r["method"] != "GET"] == []
    emu.session.delete(f"{emu.api}/v2/phone-numbers/+14155550100", headers=basic_headers())
    assert run("plan", str(project.path), "--out", str(out)).exit_code == 0
    assert run("apply", str(project.path), "--plan", str(out)).exit_code == 0
    settled(run, project)


def test_lock_held_by_another_process_is_refused(project: Project, run: Any, emu: Emulator) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from reconciler.ledger import FileBackend
            with FileBackend({str(project.state)!r}).lock(command="agora-reconciler apply (holder)"):
                print("locked", flush=True)
                time.sleep(600)  # killed by the test when it is done
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = run("apply", str(project.path), "--auto-approve", "--format", "json")
        assert result.exit_code == 1 and json.loads(result.stdout)["error"]["reason"] == "locked"
        assert f"pid {holder.pid}" in result.stderr and "agora-reconciler apply (holder)" in result.stderr
        waited = run("apply", str(project.path), "--auto-approve", "--lock-timeout", "0.3")
        assert waited.exit_code == 1 and "after waiting 0.3s" in waited.stderr
        assert [r for r in emu.requests() if r["method"] != "GET"] == []
    finally:
        holder.kill()
        holder.wait()
    assert apply(run, project).exit_code == 0


def test_unsafe_plan_is_refused_without_force(project: Project, run: Any, emu: Emulator) -> None:
    project.numbers = [number_spec(f"+1415555{i:04d}") for i in range(12)]
    project.write()
    assert apply(run, project).exit_code == 0
    project.numbers = project.numbers[:6]
    project.write()
    before = len(emu.requests())
    refused = run("apply", str(project.path), "--auto-approve", "--format", "json")
    assert refused.exit_code == 1 and json.loads(refused.stdout)["error"]["reason"] == "unsafe_plan"
    assert "deletes or replaces 6 of 12 owned phone numbers (50% > max_delete_pct 30%)" in refused.stderr
    assert [r for r in emu.requests()[before:] if r["method"] != "GET"] == []
    assert apply(run, project, "--force").exit_code == 0
    assert len(emu.numbers()) == 6


def test_empty_configuration_never_deletes_everything_silently(project: Project, run: Any, emu: Emulator) -> None:
    assert apply(run, project).exit_code == 0
    project.numbers, project.agents = [], []
    project.write()
    refused = apply(run, project)
    assert refused.exit_code == 1 and "declares no phone numbers and the plan deletes all 2 owned ones" in refused.stderr
    assert len(emu.numbers()) == 2 and len(emu.agents(APP)) == 1
    project.path.write_text("")  # a truncated file also loses settings.state: nothing is owned there
    truncated = apply(run, project)
    assert truncated.exit_code == 0 and "warning: the file is empty" in truncated.stderr
    assert len(emu.numbers()) == 2
    project.write()
    forced = apply(run, project, "--force")
    assert forced.exit_code == 0 and emu.numbers() == {} and emu.agents(APP) == []


def test_phone_replace_is_refused_without_allow_replace(project: Project, run: Any, emu: Emulator) -> None:
    assert apply(run, project).exit_code == 0
    project.numbers[0]["outbound_config"]["transport"] = "udp"
    project.write()
    refused = apply(run, project)
    assert refused.exit_code == 1 and "pass --allow-replace" in refused.stderr
    assert emu.numbers()["+14155550100"]["outbound_config"]["transport"] == "tls"
    project.settings["allow_replace"] = True
    project.write()
    assert apply(run, project).exit_code == 0
    assert emu.numbers()["+14155550100"]["outbound_config"]["transport"] == "udp"


def test_protected_number_cannot_be_deleted(project: Project, run: Any, emu: Emulator) -> None:
    project.numbers[0]["protect"] = True
    project.write()
    assert apply(run, project).exit_code == 0
    project.numbers.pop(0)
    project.write()
    plan = run("plan", str(project.path))
    assert plan.exit_code == 1 and "is protected" in plan.stdout
    refused = apply(run, project, "--force")
    assert refused.exit_code == 1 and "protected" in refused.stderr
    assert "+14155550100" in emu.numbers()


def test_without_a_tty_apply_needs_auto_approve(project: Project, run: Any, emu: Emulator) -> None:
    result = run("apply", str(project.path))
    assert result.exit_code == 1 and "pass --auto-approve" in result.stderr
    assert emu.mutating() == []


def test_ctrl_c_saves_the_ledger_and_a_rerun_converges(project: Project, emu: Emulator, api_env: dict[str, str]) -> None:
    project.numbers = [number_spec(f"+1415666{i:04d}") for i in range(30)]
    project.write()
    env = {**api_env, **project.env()}
    # Ctrl-C (SIGINT) at the start of the 6th change, which then waits for the handler: a definite point mid-apply
    proc = crashpoint.spawn(
        "int:reconciler.executor:Executor._apply:6", "apply", str(project.path), "--auto-approve", "--parallelism", "1", env=env
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr.lower()
    owned = {k for k in project.ledger()["resources"] if k.startswith("phone_number/")}
    live = {f"phone_number/{n}" for n in emu.numbers()}
    assert owned == live and 0 < len(owned) < 30
    rerun = run_process("apply", str(project.path), "--auto-approve", env=env)
    assert rerun.exit_code == 0, rerun.stderr
    assert len(emu.numbers()) == 30 and len(emu.agents(APP)) == 1


def test_secrets_never_reach_output_plan_files_or_the_ledger(project: Project, run: Any, emu: Emulator, tmp_path: Path) -> None:
    project.numbers[0]["outbound_config"]["address"] = "alice:${SIP_PASSWORD}@sip.example.com"
    project.write()
    outputs = []
    plan_file = tmp_path / "plan.json"
    for args in (
        ("validate", str(project.path)),
        ("plan", str(project.path), "--out", str(plan_file), "-vv"),
        ("plan", str(project.path), "--format", "json"),
        ("plan", str(project.path), "--format", "markdown"),
        ("apply", str(project.path), "--auto-approve", "-vv"),
        ("drift", str(project.path), "--format", "github"),
        ("state", "list", "--state", str(project.state)),
        ("state", "show", "agent/concierge", "--state", str(project.state)),
        ("export", "-vv"),
    ):
        result = run(*args)
        outputs.append(result.output)
    emu.fault(method="POST", path="update$", status=400, count=1)
    os.environ["RTC_TOKEN"] = SECRET_TOKEN + "-next"
    try:
        outputs.append(apply(run, project, "-vv").output)
    finally:
        os.environ["RTC_TOKEN"] = SECRET_TOKEN
    written = [plan_file.read_text(), project.state.read_text()] + [p.read_text() for p in tmp_path.glob("state.json*") if p.is_file()]
    for text in outputs + written:
        for secret in (SECRET_TOKEN, SECRET_KEY, SECRET_SIP, CUSTOMER_SECRET):
            assert secret not in text
    assert "hmac-sha256:" in project.state.read_text()


def test_quickstart_runs_on_a_fresh_copy(tmp_path: Path) -> None:
    folder = tmp_path / "quickstart"
    folder.mkdir()
    (folder / "agora.yaml").write_text((ROOT / "examples" / "quickstart" / "agora.yaml").read_text())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
    applied = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", str(folder), "--auto-approve"], capture_output=True, text=True, env=clean, timeout=120
    )
    assert applied.returncode == 0, applied.stderr
    assert "Apply complete: 3 created." in applied.stderr
    planned = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", str(folder)], capture_output=True, text=True, env=clean, timeout=120
    )
    assert planned.returncode == 0 and planned.stdout.startswith("No changes. The account matches the configuration.")


def test_ledger_write_failure_stops_and_dumps_what_was_done(project: Project, run: Any, emu: Emulator) -> None:
    assert apply(run, project).exit_code == 0
    (project.root / "state.json.backup").unlink(missing_ok=True)  # none after one apply: it wrote the snapshot once
    (project.root / "state.json.backup").mkdir()  # every further save fails
    project.numbers.append(number_spec("+14155550177"))
    project.write()
    result = run("apply", str(project.path), "--auto-approve", "--format", "json")
    assert result.exit_code == 1 and json.loads(result.stdout)["error"]["reason"] == "ledger"
    errored = project.root / "state.json.errored"
    assert f"what was done is saved in {errored}" in result.stderr
    assert "phone_number/+14155550177" in json.loads(errored.read_text())["resources"]
    assert "phone_number/+14155550177" not in project.ledger()["resources"], "the previous ledger is intact"
    (project.root / "state.json.backup").rmdir()
    again = apply(run, project)  # the number exists now but is not owned: adopted, no duplicate
    assert again.exit_code == 0, again.output
    assert "phone_number/+14155550177" in project.ledger()["resources"]
    settled(run, project)


@pytest.mark.parametrize(("answer", "code"), [("y", 0), ("n", 1)])
def test_apply_asks_on_a_terminal(project: Project, emu: Emulator, api_env: dict[str, str], answer: str, code: int) -> None:
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(project.path)],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, **api_env, **project.env()},
        close_fds=True,
    )
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Apply these 3 changes? [y/N]" not in seen and time.monotonic() < deadline:
        seen += os.read(main, 4096)
    os.write(main, f"{answer}\n".encode())
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen += os.read(main, 4096)
        except OSError:
            break
    assert proc.wait(timeout=30) == code, seen.decode(errors="replace")
    os.close(main)
    assert len(emu.numbers()) == (2 if answer == "y" else 0)


def test_a_saved_plan_applies_from_another_spelling_of_the_path(
    project: Project, run: Any, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "plan.json"
    assert run("plan", str(project.path), "--out", str(saved)).exit_code == 0
    monkeypatch.chdir(project.root)
    assert run("apply", "./agora.yaml", "--plan", str(saved)).exit_code == 0
    settled(run, project)
