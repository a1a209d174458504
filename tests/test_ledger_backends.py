"""The shared backend suite: every ledger backend (file, PostgreSQL) keeps the same promises.

Load, save, compare-and-set, lineage, the lock and its holder, history, and the apply journal's
durability: each test runs once per backend, against a real file and a real PostgreSQL server
(tests/pgserver.py). `other()` opens a second backend on the same storage, as another process would.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.errors import LedgerConflictError, LedgerError, LockedError
from reconciler.ledger import Backend, Ledger, open_backend
from reconciler.ledger.journal import LedgerJournal

from .pgserver import PgServer

NUMBER = {"kind": "phone_number", "applied": {"label": "one"}, "protect": False, "updated_at": 1}


@dataclass
class Store:
    """One ledger's storage and a way to open backends on it."""

    kind: str
    location: str
    name: str = "team"

    def open(self) -> Backend:
        return open_backend(self.location, self.name)


@pytest.fixture(params=["file", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "file":
        yield Store("file", str(tmp_path / "state.json"))
    else:
        url = request.getfixturevalue("pg_url")
        yield Store("postgresql", url)


def _entry(label: str) -> dict[str, Any]:
    return {**NUMBER, "applied": {"label": label}}


def test_empty_ledger_loads_and_first_save_is_serial_1(store: Store) -> None:
    backend = store.open()
    ledger = backend.load()
    assert ledger.serial == 0 and ledger.resources == {}
    ledger.resources["phone_number/+1"] = _entry("one")
    assert backend.save(ledger, 0) == 1
    again = store.open().load()
    assert (again.serial, again.lineage, again.salt) == (1, ledger.lineage, ledger.salt)
    assert again.resources == {"phone_number/+1": _entry("one")}


def test_saves_round_trip_changes_and_removals(store: Store) -> None:
    backend = store.open()
    ledger = backend.load()
    for i in range(5):
        ledger.resources[f"phone_number/+{i}"] = _entry(str(i))
    backend.save(ledger, 0)
    ledger.resources["phone_number/+1"] = _entry("changed")
    del ledger.resources["phone_number/+2"]
    ledger.resources["agent/a"] = {"kind": "agent", "agent_id": "A1", "pending": False}
    backend.save(ledger, 1)
    assert store.open().load().to_dict() == ledger.to_dict()


def test_a_save_whose_serial_moved_is_refused(store: Store) -> None:
    first, second = store.open(), store.open()
    a = first.load()
    first.save(a, 0)
    b = second.load()
    a.resources["phone_number/+1"] = _entry("from a")
    first.save(a, 1)
    b.resources["phone_number/+1"] = _entry("from b")
    with pytest.raises(LedgerConflictError, match=r"changed while this run was using it \(serial 2, expected 1\)"):
        second.save(b, 1)
    assert store.open().load().resources == {"phone_number/+1": _entry("from a")}


def test_another_lineage_is_never_overwritten(store: Store) -> None:
    backend = store.open()
    backend.save(backend.load(), 0)
    stranger = Ledger(resources={"phone_number/+9": _entry("x")})
    with pytest.raises(LedgerConflictError, match="another lineage"):
        store.open().save(stranger, 1)
    assert store.open().load().resources == {}


def test_the_lock_excludes_others_and_names_its_holder(store: Store) -> None:
    holder, other = store.open(), store.open()
    with holder.lock(command="agora-reconciler apply"):
        info = other.holder()
        assert info is not None and (info.pid, info.command) == (os.getpid(), "agora-reconciler apply")
        with (
            pytest.raises(
                LockedError, match=rf"is locked by pid {os.getpid()} on .*\('agora-reconciler apply'\) since .* after waiting 0.2s"
            ),
            other.lock(timeout=0.2),
        ):
            pass
    with other.lock(timeout=0):
        assert other.holder() is not None
    assert other.holder() is None


def test_a_waiting_lock_is_granted_when_released(store: Store) -> None:
    holder, other = store.open(), store.open()
    held, release, granted = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with holder.lock(command="first"):
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(60)

    def wait_for_it() -> None:
        with other.lock(timeout=120, command="second"):
            granted.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not granted.wait(0.3)  # still held
    release.set()
    thread.join()
    waiter.join()
    assert granted.is_set()


def test_a_killed_holder_frees_the_lock(store: Store, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import sys, time, pathlib\n"
        "from reconciler.ledger import open_backend\n"
        "b = open_backend(sys.argv[1], sys.argv[2])\n"
        "with b.lock(command='agora-reconciler apply'):\n"
        "    pathlib.Path(sys.argv[3]).write_text('held')\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, store.location, store.name, str(ready)], cwd=Path(__file__).parent.parent)
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert ready.exists(), "the child never took the lock"
        other = store.open()
        with pytest.raises(LockedError, match=rf"locked by pid {proc.pid} "), other.lock():
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with other.lock(timeout=60, command="after the kill"):
            info = other.holder()
            assert info is not None and info.pid == os.getpid()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_history_keeps_what_the_backend_promises(store: Store) -> None:
    backend = store.open()
    ledger = backend.load()
    for i in range(3):
        ledger.resources["phone_number/+1"] = _entry(f"v{i}")
        backend.save(ledger, i)
    if store.kind == "file":  # the file backend keeps the previous version beside it
        previous = open_backend(store.location + ".backup").load()
        assert previous.serial == 2 and previous.resources["phone_number/+1"] == _entry("v1")
        return
    from reconciler.ledger.postgres import PostgresBackend

    assert isinstance(backend, PostgresBackend)
    history = backend.history()
    assert [h.serial for h in history] == [3, 2, 1]
    assert all(h.saved_by.endswith(f"pid {os.getpid()}") and h.saved_at for h in history)
    assert [store.open().load_at(s).resources["phone_number/+1"]["applied"]["label"] for s in (1, 2, 3)] == ["v0", "v1", "v2"]  # type: ignore[attr-defined]
    assert backend.prune_history(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)) == 0
    assert backend.prune_history(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)) == 2
    assert [h.serial for h in backend.history()] == [3]
    with pytest.raises(LedgerError, match="serial 1 is not in the history"):
        backend.load_at(1)
    assert backend.load_at(3).resources == store.open().load().resources


def test_journal_a_pending_start_survives_a_crash(store: Store) -> None:
    backend = store.open()
    journal = LedgerJournal(backend, backend.load())
    pending = {"kind": "agent", "app_id": "app", "agent_id": None, "instance_name": "concierge-1a2b", "pending": True}
    journal.update(lambda res: res.__setitem__("agent/concierge", pending))
    # the process dies here: the journal is never closed
    assert store.open().load().resources == {"agent/concierge": pending}


def test_journal_reports_a_change_only_once_saved(store: Store) -> None:
    backend = store.open()
    journal = LedgerJournal(backend, backend.load())
    seen: list[dict[str, Any]] = []
    versions = [journal.record(lambda res, i=i: res.__setitem__(f"phone_number/+{i}", _entry(str(i)))) for i in range(20)]
    done = threading.Event()

    def durable(error: LedgerError | None) -> None:
        assert error is None
        seen.append(store.open().load().resources)
        done.set()

    journal.when_durable(versions[-1], durable)
    journal.close()
    assert done.is_set()
    assert len(seen[0]) == 20
    assert store.open().load().resources == journal.ledger.resources


def test_journal_stops_on_a_conflicting_save(store: Store) -> None:
    backend = store.open()
    journal = LedgerJournal(backend, backend.load())
    journal.update(lambda res: res.__setitem__("phone_number/+1", _entry("mine")))
    intruder = store.open()
    theirs = intruder.load()
    theirs.resources["phone_number/+2"] = _entry("theirs")
    intruder.save(theirs, theirs.serial)
    errors: list[LedgerError | None] = []
    journal.when_durable(journal.record(lambda res: res.__setitem__("phone_number/+3", _entry("lost"))), errors.append)
    journal.close()
    assert isinstance(errors[0], LedgerConflictError) and isinstance(journal.failed, LedgerConflictError)
    assert "phone_number/+3" not in store.open().load().resources


def test_postgresql_schema_tables_and_migrations(pg_server: PgServer) -> None:
    """Tables are created on first use; an older schema is migrated forward, a newer one refused."""
    from reconciler.ledger import pg_schema
    from reconciler.ledger.postgres import PostgresBackend

    schema = pg_server.new_schema()
    url = pg_server.url(schema)
    with psycopg.connect(url, autocommit=True) as conn:  # a database as version 1 of the tables left it
        PostgresBackend._ensure_schema(conn, 1)
        conn.execute("INSERT INTO agora_reconciler_ledgers (name, lineage, serial, salt) VALUES ('team', 'L-1', 1, 'salt')")
        conn.execute(
            "INSERT INTO agora_reconciler_resources (ledger_id, address, from_serial, entry) "
            "SELECT id, 'phone_number/+1', 1, %s::jsonb FROM agora_reconciler_ledgers",
            (json.dumps(_entry("kept")),),
        )
    assert pg_server.admin(f"SELECT value FROM {schema}.agora_reconciler_meta") == [("1",)]
    fresh = PostgresBackend(url, "team")
    assert fresh.load().resources == {"phone_number/+1": _entry("kept")}
    fresh.append([{"op": "drop", "address": "phone_number/+1"}])  # the migrated journal table works
    assert PostgresBackend(url, "team").load().resources == {}
    version = pg_server.admin(f"SELECT value FROM {schema}.agora_reconciler_meta WHERE key = 'schema_version'")
    assert version == [(str(pg_schema.SCHEMA_VERSION),)]
    pg_server.admin(f"UPDATE {schema}.agora_reconciler_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="schema version 99, newer than this agora-reconciler knows"):
        PostgresBackend(url, "team").load()


def test_postgresql_ledgers_are_separate_by_name(pg_url: str) -> None:
    a, b = open_backend(pg_url, "team-a"), open_backend(pg_url, "team-b")
    ledger = a.load()
    ledger.resources["phone_number/+1"] = _entry("a")
    a.save(ledger, 0)
    assert b.load().resources == {} and b.load().serial == 0
    with a.lock(), b.lock():  # separate locks too
        pass


def test_postgresql_appended_records_are_replayed_then_compacted(pg_url: str, pg_server: PgServer) -> None:
    from reconciler.ledger.postgres import PostgresBackend

    backend = PostgresBackend(pg_url, "team")
    ledger = backend.load()
    ledger.resources["phone_number/+1"] = _entry("one")
    backend.save(ledger, 0)
    backend.append([{"op": "put", "address": "agent/a", "entry": {"kind": "agent", "pending": True}}])
    backend.append([{"op": "drop", "address": "phone_number/+1"}])
    replayed = PostgresBackend(pg_url, "team").load()
    assert replayed.serial == 1 and replayed.resources == {"agent/a": {"kind": "agent", "pending": True}}
    backend.save(replayed, 1)
    assert PostgresBackend(pg_url, "team").load().resources == replayed.resources
    schema = pg_url.split("search_path%3D", 1)[1]
    assert pg_server.admin(f"SELECT count(*) FROM {schema}.agora_reconciler_journal") == [(0,)]


def test_postgresql_a_run_that_lost_its_lock_cannot_write(pg_url: str, pg_server: PgServer) -> None:
    from reconciler.ledger.postgres import PostgresBackend

    backend = PostgresBackend(pg_url, "team")
    ledger = backend.load()
    with backend.lock(command="agora-reconciler apply"):
        assert backend._lock_conn is not None
        pg_server.terminate(backend._lock_conn.info.backend_pid)
        ledger.resources["phone_number/+1"] = _entry("late")
        with pytest.raises(LedgerConflictError, match=r"lock on the ledger .* was lost"):
            backend.save(ledger, 0)
    assert PostgresBackend(pg_url, "team").load().serial == 0


def test_postgresql_loss_of_the_data_connection_is_a_ledger_error_then_recovers(pg_url: str, pg_server: PgServer) -> None:
    from reconciler.ledger.postgres import PostgresBackend

    backend = PostgresBackend(pg_url, "team")
    ledger = backend.load()
    assert backend._conn is not None
    pg_server.terminate(backend._conn.info.backend_pid)
    ledger.resources["phone_number/+1"] = _entry("one")
    with pytest.raises(LedgerError, match="cannot write the ledger in postgresql://"):
        backend.save(ledger, 0)
    assert backend.save(ledger, 0) == 1  # reconnects
    assert PostgresBackend(pg_url, "team").load().resources == ledger.resources


def _wait_session_gone(pg_server: PgServer, backend_pid: int) -> None:
    """Return once the server session `backend_pid` has ended (it leaves `pg_stat_activity` after it
    released its locks); the bound only stops a broken server from hanging the suite."""
    deadline = time.monotonic() + 120
    while pg_server.admin("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend_pid,)) != [(0,)]:
        assert time.monotonic() < deadline, f"session {backend_pid} still runs 120 s after its client was killed"
        time.sleep(0.02)


def test_postgresql_one_leader_among_replicas_and_a_killed_leader_is_replaced(pg_server: PgServer, tmp_path: Path) -> None:
    """The killed leader's lock is freed by the server when its session ends, which happens some
    time after the client process is gone: the test waits for that session to leave
    `pg_stat_activity` (an observable condition), never for a clock."""
    from reconciler.ledger.postgres import PostgresBackend

    schema = pg_server.new_schema()
    pg_url = pg_server.url(schema)

    ready = tmp_path / "ready"
    code = (
        "import sys, time, pathlib\n"
        "from reconciler.ledger import open_backend\n"
        "b = open_backend(sys.argv[1], 'team')\n"
        "assert b.try_lead('agora-reconciler reconcile')\n"
        "pathlib.Path(sys.argv[2]).write_text('leading')\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, pg_url, str(ready)], cwd=Path(__file__).parent.parent)
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert ready.exists(), "the first replica never led"
        standby = PostgresBackend(pg_url, "team")
        assert not standby.try_lead("agora-reconciler reconcile")
        leader = standby.leader()
        assert leader is not None and (leader.pid, leader.command) == (proc.pid, "agora-reconciler reconcile")
        with standby.lock(timeout=5):  # leadership is not the run lock: an apply from CI still runs
            pass
        (leader_session,) = pg_server.admin(f"SELECT backend_pid FROM {schema}.agora_reconciler_leaders")[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _wait_session_gone(pg_server, leader_session)
        assert standby.try_lead("agora-reconciler reconcile")  # the server freed it with the connection
        assert standby.try_lead("agora-reconciler reconcile")  # and it stays ours
        now = standby.leader()
        assert now is not None and now.pid == os.getpid()
        standby.resign()
        assert standby.leader() is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
