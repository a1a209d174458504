"""The PostgreSQL ledger end to end: the CLI against the emulator and a real PostgreSQL server.

`--state postgresql://...` for plan/apply/drift/state, the ledger name, history, migration both
ways, two applies at once, SIGKILL of the lock holder, losing the database mid-apply, and the DSN
password, which must never appear in any output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.ledger import LockHolder, open_backend
from reconciler.ledger.postgres import PostgresBackend

from .conftest import Emulator, Result, run_process
from .e2e import Project
from .pgserver import PgServer
from .pgserver import running as running_postgres
from .reliability import crashpoint

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS: set[str] = set()


def _remember(result: Result) -> Result:
    """Every output of this module is checked for the DSN password as it is produced."""
    for password in PASSWORDS:
        assert password not in result.output, "the DSN password was printed"
    return result


@pytest.fixture(autouse=True)
def _password(pg_server: PgServer) -> None:
    PASSWORDS.add(pg_server.password)


@pytest.fixture
def pg_project(project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The e2e project with its ledger in PostgreSQL (through AGORA_RECONCILER_STATE), named "team"."""
    monkeypatch.setenv("AGORA_RECONCILER_STATE", pg_url)
    monkeypatch.setenv("AGORA_RECONCILER_STATE_NAME", "team")
    project.url = pg_url  # type: ignore[attr-defined]
    return project


def _backend(project: Project) -> PostgresBackend:
    backend = open_backend(project.url, "team")  # type: ignore[attr-defined]
    assert isinstance(backend, PostgresBackend)
    return backend


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _popen(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _finish(proc: subprocess.Popen[str], seen: str = "") -> Result:
    """Wait for `proc` to end; `seen` is what was already read from its stderr."""
    out, err = proc.communicate(timeout=120)
    return _remember(Result(proc.returncode, out, seen + err))


def _read_stderr_until(proc: subprocess.Popen[str], text: str) -> str:
    """Read `proc`'s stderr up to the line holding `text`; returns what was read."""
    assert proc.stderr is not None
    watchdog = threading.Timer(300, proc.kill)  # a bound for a broken run (readline returns ""), not a verdict
    watchdog.start()
    try:
        seen = ""
        while text not in seen:
            line = proc.stderr.readline()
            assert line, f"ended before printing {text!r}: {seen}"
            seen += line
        return seen
    finally:
        watchdog.cancel()


def test_apply_plan_drift_and_state_on_a_postgresql_ledger(pg_project: Project, run: Any, emu: Emulator) -> None:
    applied = _remember(run("apply", str(pg_project.path), "--auto-approve"))
    assert applied.exit_code == 0, applied.output
    assert not pg_project.state.exists()  # nothing written next to the config
    plan = _remember(run("plan", str(pg_project.path), "--detailed-exitcode"))
    assert plan.exit_code == 0, plan.output
    assert _remember(run("drift", str(pg_project.path))).exit_code == 0
    listed = _remember(run("state", "list"))
    assert listed.stdout.splitlines()[:2] == ["phone_number/+14155550100", "phone_number/+14155550101"]
    first_serial = json.loads(_remember(run("state", "history", "--format", "json")).stdout)[0]["serial"]
    pg_project.numbers[0]["inbound_config"]["pipeline_id"] = "pl_demo_sales"  # an update in place
    pg_project.write()
    assert _remember(run("apply", str(pg_project.path), "--auto-approve")).exit_code == 0
    history = json.loads(_remember(run("state", "history", "--format", "json")).stdout)
    assert [h["serial"] for h in history] == sorted((h["serial"] for h in history), reverse=True) and len(history) >= 2
    assert all(h["command"] == "agora-reconciler apply" for h in history)
    latest = json.loads(_remember(run("state", "show", "phone_number/+14155550100")).stdout)
    first = json.loads(_remember(run("state", "show", "phone_number/+14155550100", "--serial", str(first_serial))).stdout)
    assert latest["applied"]["inbound_config"]["pipeline_id"] == "pl_demo_sales"
    assert first["applied"]["inbound_config"]["pipeline_id"] == "pl_demo_support"
    text = _remember(run("state", "history"))
    assert text.exit_code == 0 and f"{history[0]['serial']:>6}  " in text.stdout
    pruned = _remember(run("state", "history", "--prune-before", "0"))
    assert pruned.exit_code == 0 and f"Pruned {len(history) - 1} serial(s)" in pruned.stderr
    assert [h["serial"] for h in json.loads(run("state", "history", "--format", "json").stdout)] == [history[0]["serial"]]
    gone = _remember(run("state", "show", "phone_number/+14155550100", "--serial", str(first_serial)))
    assert gone.exit_code == 1 and "not in the history" in gone.stderr


def test_the_ledger_name_defaults_to_the_config_folder(project: Project, pg_url: str, run: Any, emu: Emulator) -> None:
    assert _remember(run("apply", str(project.path), "--auto-approve", "--state", pg_url)).exit_code == 0
    named = open_backend(pg_url, project.root.resolve().name).load()
    assert set(named.resources) >= {"phone_number/+14155550100", "phone_number/+14155550101"}
    other = _remember(run("state", "list", "--state", pg_url, "--state-name", "someone-else"))
    assert other.exit_code == 0 and other.stdout == ""
    mine = _remember(run("state", "list", "-c", str(project.path), "--state", pg_url))
    assert "phone_number/+14155550100" in mine.stdout


def test_a_file_history_request_is_refused_clearly(project: Project, run: Any, emu: Emulator) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    refused = run("state", "history", "--state", str(project.state))
    assert refused.exit_code == 1 and "keeps no history" in refused.stderr


def test_migrate_file_to_postgresql_and_back_round_trips(project: Project, pg_url: str, run: Any, emu: Emulator, tmp_path: Path) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    original = json.loads(project.state.read_text())
    to_pg = _remember(run("state", "migrate", "--from", str(project.state), "--to", pg_url, "--state-name", "moved"))
    assert to_pg.exit_code == 0, to_pg.output
    assert f"Migrated serial {original['serial']} ({len(original['resources'])} entries)" in to_pg.stderr
    plan = _remember(run("plan", str(project.path), "--state", pg_url, "--state-name", "moved", "--detailed-exitcode"))
    assert plan.exit_code == 0, plan.output
    again = _remember(run("state", "migrate", "--from", str(project.state), "--to", pg_url, "--state-name", "moved"))
    assert again.exit_code == 1 and "already holds a ledger" in again.stderr
    back = tmp_path / "back" / "state.json"
    assert _remember(run("state", "migrate", "--from", pg_url, "--to", str(back), "--state-name", "moved")).exit_code == 0
    assert json.loads(back.read_text()) == original
    assert json.loads(project.state.read_text()) == original  # the source is kept


def _holder(project: Project) -> LockHolder | None:
    return _backend(project).holder()


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process `pid` has open (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _waits_for_the_lock(pg_server: PgServer, proc: subprocess.Popen[str]) -> bool:
    """`proc` tried the run lock and was refused: one of its sessions last ran pg_try_advisory_lock."""
    if proc.poll() is not None:
        raise AssertionError(f"exited {proc.returncode} instead of waiting for the lock: {proc.communicate()}")
    ports = _local_ports(proc.pid)
    query = "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s) AND query LIKE 'SELECT pg_try_advisory_lock%%'"
    return bool(ports) and pg_server.admin(query, (sorted(ports),)) != [(0,)]


def test_two_applies_at_once_one_is_refused_naming_the_holder_one_waits(pg_project: Project, emu: Emulator, pg_server: PgServer) -> None:
    pg_project.agents = []
    pg_project.write()
    # frozen (SIGSTOP) at its first binding PATCH: the lock is held for as long as the test needs
    first = crashpoint.spawn(
        "stop:reconciler.client:Client.update_number", "apply", str(pg_project.path), "--auto-approve", env={"PYTHONPATH": str(ROOT)}
    )
    try:
        _wait_for(lambda: _frozen(first), "the first apply to stop at its first binding PATCH, holding the lock")
        held = _holder(pg_project)
        assert held is not None and held.pid == first.pid and held.command == "agora-reconciler apply", held
        refused = _remember(run_process("apply", str(pg_project.path), "--auto-approve", cwd=str(pg_project.root)))
        assert refused.exit_code == 1
        assert f"is locked by pid {first.pid} on " in refused.stderr and "('agora-reconciler apply') since" in refused.stderr
        waiter = _popen("apply", str(pg_project.path), "--auto-approve", "--lock-timeout", "120", cwd=pg_project.root)
        _wait_for(lambda: _waits_for_the_lock(pg_server, waiter), "the second apply to wait for the lock")
        first.send_signal(signal.SIGCONT)
        done = _finish(first)
        assert done.exit_code == 0, done.output
        waited = _finish(waiter)
        assert waited.exit_code == 0 and "Nothing to apply." in waited.stderr, waited.output
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
    history = _backend(pg_project).history()
    writers = [h.saved_by for h in sorted(history, key=lambda h: h.serial)]
    assert writers and all(w.endswith(f"pid {first.pid}") for w in writers), writers  # the waiter found nothing to write


def _running(proc: subprocess.Popen[str]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"exited {proc.returncode} before its crash point: {proc.communicate()}")
    return True


def _process_state(pid: int) -> str:
    """The kernel's one-letter state of a process ("T" when stopped), from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _frozen(proc: subprocess.Popen[str]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"exited {proc.returncode} before its crash point: {proc.communicate()}")
    return _process_state(proc.pid) == "T"


def test_sigkill_of_an_apply_holding_the_lock_frees_it(pg_project: Project, emu: Emulator, run: Any) -> None:
    pg_project.agents = []
    pg_project.write()
    # frozen (SIGSTOP) at its first binding PATCH, one change at a time: a definite point, lock held, nothing in flight
    victim = crashpoint.spawn(
        "stop:reconciler.client:Client.update_number",
        "apply",
        str(pg_project.path),
        "--auto-approve",
        "--parallelism",
        "1",
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        _wait_for(lambda: _frozen(victim), "the apply to stop at its first binding PATCH")
        held = _holder(pg_project)
        assert held is not None and held.pid == victim.pid, held
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(30)
    # the server frees the lock when it sees the dead client's connection close: by itself, no later run needed
    _wait_for(lambda: _holder(pg_project) is None, "the server to free the killed apply's lock")
    after = _remember(run("apply", str(pg_project.path), "--auto-approve", "--lock-timeout", "60"))
    assert after.exit_code == 0, after.output
    assert _remember(run("plan", str(pg_project.path), "--detailed-exitcode")).exit_code == 0
    assert _holder(pg_project) is None


def test_losing_the_database_mid_apply_stops_reports_and_keeps_what_was_committed(
    pg_project: Project, emu: Emulator, pg_server: PgServer
) -> None:
    pg_project.agents = []
    pg_project.write()
    held, release = pg_project.root / "held", pg_project.root / "release"
    # one change at a time; the second binding PATCH (+14155550101) waits until the test released it
    proc = crashpoint.spawn(
        "hold:reconciler.client:Client.update_number:2",
        *("apply", str(pg_project.path), "--auto-approve", "--parallelism", "1"),
        env={"PYTHONPATH": str(ROOT), "CRASHPOINT_HELD": str(held), "CRASHPOINT_RELEASE": str(release)},
    )
    try:
        _wait_for(lambda: _running(proc) and held.exists(), "the second number's binding PATCH to be reached")
        seen = _read_stderr_until(proc, "phone_number/+14155550100: ")  # reported as done once it is durable
        assert _committed(pg_project, "phone_number/+14155550100"), seen
        # the apply's lock connection dies (as when the network or the server drops it)
        ((lock_backend,),) = pg_server.admin(f"SELECT backend_pid FROM {_schema(pg_project)}.agora_reconciler_locks")
        pg_server.terminate(lock_backend)
        release.touch()
        result = _finish(proc, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result.exit_code == 1, result.output
    assert "phone_number/+14155550100: created" in result.stderr
    assert "lock on the ledger" in result.stderr and "was lost" in result.stderr
    assert "phone_number/+14155550101: failed: done, but the ledger could not be written" in result.stderr
    kept = _backend(pg_project).load().resources
    assert _committed(pg_project, "phone_number/+14155550100")
    assert kept["phone_number/+14155550101"]["pending"] is True  # journaled as pending before its import, never as done


def _committed(project: Project, address: str) -> bool:
    entry = _backend(project).load().resources.get(address)
    return entry is not None and not entry.get("pending")


def _schema(project: Project) -> str:
    return str(project.url).split("search_path%3D", 1)[1]  # type: ignore[attr-defined]


def test_the_password_comes_from_pgpassword_or_pgpass(
    pg_project: Project, pg_server: PgServer, tmp_path: Path, run: Any, emu: Emulator
) -> None:
    assert run("apply", str(pg_project.path), "--auto-approve").exit_code == 0
    bare = pg_server.url(_schema(pg_project), password=False)
    env = {"AGORA_RECONCILER_STATE": bare, "AGORA_RECONCILER_STATE_NAME": "team"}
    no_password = _remember(run_process("state", "list", env={**env, "PGPASSFILE": str(tmp_path / "none")}, cwd=str(tmp_path)))
    assert no_password.exit_code == 1 and "cannot connect to the ledger database postgresql://reconciler@" in no_password.stderr
    by_env = _remember(run_process("state", "list", env={**env, "PGPASSWORD": pg_server.password}, cwd=str(tmp_path)))
    assert by_env.exit_code == 0 and "phone_number/+14155550100" in by_env.stdout, by_env.output
    home = tmp_path / "home"
    home.mkdir()
    pgpass = home / ".pgpass"
    pgpass.write_text(f"*:*:*:reconciler:{pg_server.password}\n")
    pgpass.chmod(0o600)
    by_file = _remember(run_process("state", "list", env={**env, "HOME": str(home)}, cwd=str(tmp_path)))
    assert by_file.exit_code == 0 and "phone_number/+14155550100" in by_file.stdout, by_file.output


def test_the_dsn_password_never_appears_in_any_output(pg_project: Project, pg_server: PgServer, run: Any, emu: Emulator) -> None:
    password = pg_server.password
    assert password
    url = str(pg_project.url)  # type: ignore[attr-defined]
    outputs = [
        run("apply", str(pg_project.path), "--auto-approve", "-vv"),
        run("plan", str(pg_project.path), "-vv", "--format", "json"),
        run("state", "list"),
        run("state", "history"),
        run("state", "show", "phone_number/+9"),  # an error naming the ledger
        run("state", "migrate", "--from", url, "--to", url),  # refused, naming both
        run("plan", str(pg_project.path), "--state", url.replace("/agora?", "/no_such_db?")),  # cannot connect
        run("plan", str(pg_project.path), "--state", url.replace(password, "wrong-" + password)),  # refused login
    ]
    with _backend(pg_project).lock(command="agora-reconciler apply"):
        outputs.append(run_process("apply", str(pg_project.path), "--auto-approve", cwd=str(pg_project.root)))  # locked
    assert [o.exit_code for o in outputs] == [0, 0, 0, 0, 1, 1, 1, 1, 1], [o.output for o in outputs]
    assert "postgresql://reconciler:***@127.0.0.1" in outputs[4].stderr
    for result in outputs:
        assert password not in result.output


def test_settings_state_may_name_a_postgresql_ledger(project: Project, pg_url: str, run: Any, emu: Emulator) -> None:
    project.settings["state"] = pg_url
    project.write()
    applied = _remember(run("apply", str(project.path), "--auto-approve"))
    assert applied.exit_code == 0, applied.output
    assert not project.state.exists()
    assert _remember(run("plan", str(project.path), "--detailed-exitcode")).exit_code == 0
    assert "phone_number/+14155550100" in open_backend(pg_url, project.root.resolve().name).load().resources


def test_a_database_crash_mid_apply_stops_the_run_and_loses_nothing_committed(project: Project, emu: Emulator) -> None:
    """The server itself goes away (immediate stop) while a change is in flight: the run stops with
    exit 1 and reports what was done; after a restart, every change reported done is there."""
    project.agents = []
    project.write()
    held, release = project.root / "held", project.root / "release"
    with running_postgres(private=True) as server:
        PASSWORDS.add(server.password)
        url = server.url(server.new_schema())
        # one change at a time; the second binding PATCH (+14155550101) waits until the test released it
        proc = crashpoint.spawn(
            "hold:reconciler.client:Client.update_number:2",
            *("apply", str(project.path), "--auto-approve", "--parallelism", "1", "--state", url, "--state-name", "team"),
            env={"PYTHONPATH": str(ROOT), "CRASHPOINT_HELD": str(held), "CRASHPOINT_RELEASE": str(release), **project.env()},
        )
        try:
            _wait_for(lambda: _running(proc) and held.exists(), "the second number's binding PATCH to be reached")
            seen = _read_stderr_until(proc, "phone_number/+14155550100: ")  # reported as done once it is durable
            assert _committed_at(url, "phone_number/+14155550100"), seen
            server.crash()
            release.touch()
            result = _finish(proc, seen)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert result.exit_code == 1, result.output
        assert "phone_number/+14155550100: created" in result.stderr
        assert "phone_number/+14155550101: failed: done, but the ledger could not be written" in result.stderr
        assert re.search(r"the ledger (database|in) postgresql://reconciler:\*\*\*@127\.0\.0\.1:\d+/agora", result.stderr), result.stderr
        server.restart()
        assert _committed_at(url, "phone_number/+14155550100")
        rerun = _remember(
            run_process("apply", str(project.path), "--auto-approve", "--state", url, "--state-name", "team", cwd=str(project.root))
        )
        assert rerun.exit_code == 0, rerun.output
        assert _committed_at(url, "phone_number/+14155550101")


def _committed_at(url: str, address: str) -> bool:
    entry = open_backend(url, "team").load().resources.get(address)
    return entry is not None and not entry.get("pending")


def test_state_forget_takes_the_lock_readers_do_not_and_forget_is_in_history(pg_project: Project, run: Any, emu: Emulator) -> None:
    assert run("apply", str(pg_project.path), "--auto-approve").exit_code == 0
    with _backend(pg_project).lock(command="agora-reconciler apply"):
        refused = _remember(run_process("state", "forget", "phone_number/+14155550100", cwd=str(pg_project.root)))
        assert refused.exit_code == 1 and f"locked by pid {os.getpid()} " in refused.stderr, refused.output
        # readers do not take the lock: plan, drift and state list/show/history answer meanwhile
        assert _remember(run("plan", str(pg_project.path), "--detailed-exitcode")).exit_code == 0
        assert _remember(run("drift", str(pg_project.path))).exit_code == 0
        assert "phone_number/+14155550100" in _remember(run("state", "list")).stdout
        assert _remember(run("state", "show", "phone_number/+14155550100")).exit_code == 0
        assert _remember(run("state", "history")).exit_code == 0
    forgot = _remember(run("state", "forget", "phone_number/+14155550100", "--lock-timeout", "30"))
    assert forgot.exit_code == 0, forgot.output
    assert "phone_number/+14155550100" not in _backend(pg_project).load().resources
    assert _backend(pg_project).history()[0].command == "agora-reconciler state forget"
