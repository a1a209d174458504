"""The PostgreSQL ledger backend (`state: postgresql://...`): the only module that imports psycopg.

Owns connecting (the DSN's password is a secret: registered with the redactor, shown masked; it
may also come from PGPASSWORD or ~/.pgpass through libpq), creating and migrating the tables on
first use (`pg_schema`), compare-and-set saves in one transaction that write only the entries
that changed, the history of every serial, the append-only journal, and the run lock: a
session-level advisory lock on a dedicated connection, so it dies with the process, with its
holder described in `agora_reconciler_locks`. While the lock is held every save checks that the
lock connection still holds it, so a run that lost its lock can never write. Leadership among
`reconcile` replicas is a second advisory lock, kept on its own connection across cycles.
SQL text lives in `pg_schema`; the pure helpers (delta, replay) in `pg_rows`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import LedgerConflictError, LedgerError, LockedError
from ..secrets import MASK, REDACTOR, redact
from . import LEDGER_VERSION, Ledger, LockHolder, SavedSerial, Validator
from .pg_rows import default_command, delta, entries_from_rows, now_iso, replay, who
from .pg_schema import HOLDS, LEADERSHIP, LOCK_CLASS, META_TABLE, MIGRATION_LOCK, MIGRATIONS, RUN_LOCK, SCHEMA_VERSION, SQL, Advisory

T = TypeVar("T")
CONNECT_DEFAULTS = {
    "application_name": "agora-reconciler",
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
LOCK_POLL_S = 0.1


def mask_dsn(dsn: str) -> str:
    """The DSN with its password (URI userinfo or `password=` parameter) replaced by ***."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    masked = dsn
    if password:
        REDACTOR.register(password)
        for form in {str(password), urllib.parse.quote(str(password), safe=""), urllib.parse.quote(str(password))}:
            masked = masked.replace(form, MASK)
    return redact(masked)


class PostgresBackend:
    """A named ledger in a PostgreSQL database. Thread-safe (one data connection, serialised)."""

    def __init__(self, dsn: str, name: str, validate: Validator | None = None) -> None:
        self.validate = validate
        if not name:
            raise LedgerError("a PostgreSQL ledger needs a name (--state-name)")
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise LedgerError(f"the state DSN is not valid: {redact(str(exc))}") from None
        self.masked_dsn = mask_dsn(dsn)
        if os.environ.get("PGPASSWORD"):
            REDACTOR.register(os.environ["PGPASSWORD"])
        self._conninfo = make_conninfo(dsn, **{k: v for k, v in CONNECT_DEFAULTS.items() if k not in params})
        self.name = name
        self.location = f"{self.masked_dsn} (ledger {name})"
        self.errored_path = None
        self._mutex = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._ledger_id: int | None = None
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._leader_conn: psycopg.Connection[Any] | None = None
        self._lock_command = ""
        # the stored entries of serial _cache_key[1] (the very objects handed out by load, when it read them)
        self._cache: dict[str, dict[str, Any]] = {}
        self._cache_key: tuple[str | None, int] | None = None
        self._unacked: tuple[str, int, object] | None = None  # (save id, expected serial, resources) of a save whose COMMIT got no answer

    # ------------------------------------------------------------------ connections
    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot connect to the ledger database {self.masked_dsn}: {_first_line(exc)}") from None

    def _run(self, what: str, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run `work` on the data connection (connecting and migrating on first use)."""
        with self._mutex:
            if self._conn is None or self._conn.closed:
                conn = self._connect()
                try:
                    self._ensure_schema(conn, SCHEMA_VERSION)
                    self._ledger_id = self._ensure_ledger(conn)
                except psycopg.Error as exc:
                    conn.close()
                    raise LedgerError(f"cannot {what} the ledger in {self.masked_dsn}: {_first_line(exc)}") from None
                self._conn = conn
            try:
                return work(self._conn)
            except psycopg.Error as exc:
                if self._conn.broken or self._conn.closed:
                    self._conn.close()
                    self._conn = None
                raise LedgerError(f"cannot {what} the ledger in {self.masked_dsn}: {_first_line(exc)}") from None

    def close(self) -> None:
        self.resign()
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @staticmethod
    def _ensure_schema(conn: psycopg.Connection[Any], target: int) -> None:
        """Create the tables or run the missing forward migrations (serialised by an advisory lock)."""
        if conn.execute("SELECT to_regclass('agora_reconciler_meta') IS NOT NULL").fetchone() == (True,):
            row = conn.execute("SELECT value FROM agora_reconciler_meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) == target:
                return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
            conn.execute(META_TABLE)
            row = conn.execute("SELECT value FROM agora_reconciler_meta WHERE key = 'schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise LedgerError(
                    f"the ledger tables have schema version {current}, newer than this agora-reconciler knows ({SCHEMA_VERSION}); upgrade it"
                )
            for version in range(current, target):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)  # type: ignore[arg-type]  # constant SQL from pg_schema
            conn.execute(SQL.set_version, (str(max(current, target)),))

    def _ensure_ledger(self, conn: psycopg.Connection[Any]) -> int:
        conn.execute("INSERT INTO agora_reconciler_ledgers (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (self.name,))
        row = conn.execute("SELECT id FROM agora_reconciler_ledgers WHERE name = %s", (self.name,)).fetchone()
        assert row is not None
        return int(row[0])

    @property
    def ledger_id(self) -> int:
        if self._ledger_id is None:
            self._run("open", lambda conn: None)
        assert self._ledger_id is not None
        return self._ledger_id

    # ------------------------------------------------------------------ load
    def load(self) -> Ledger:
        return self._run("read", self._load)

    def _load(self, conn: psycopg.Connection[Any]) -> Ledger:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            lineage, serial, salt, version = self._head(cur)
            resources = self._current(cur)
            cur.execute(SQL.journal, (self._ledger_id, serial))
            journal = [r for (batch,) in cur.fetchall() for r in batch]
        if lineage is None:
            ledger = Ledger()
        else:
            doc = {"version": version, "lineage": lineage, "serial": serial, "salt": salt, "resources": resources}
            ledger = Ledger.from_dict(doc, self.location, self.validate)
        self._cache = dict(ledger.resources)
        self._cache_key = (lineage, serial)
        replay(ledger.resources, journal)
        ledger.journaled = len(journal)
        if self.validate is not None and journal:  # the snapshot was checked above
            Ledger.from_dict(ledger.to_dict(), f"{self.location} (with its journal)", self.validate)
        return ledger

    def _current(self, cur: psycopg.Cursor[Any]) -> dict[str, dict[str, Any]]:
        """The current entries (as text, joined into one JSON document: one parse, not one per row)."""
        cur.execute(SQL.current, (self._ledger_id,))
        return entries_from_rows(cur.fetchall())

    def _head(self, cur: psycopg.Cursor[Any]) -> tuple[str | None, int, str | None, int]:
        cur.execute("SELECT lineage, serial, salt, version FROM agora_reconciler_ledgers WHERE id = %s", (self._ledger_id,))
        row = cur.fetchone()
        assert row is not None
        return row[0], int(row[1]), row[2], int(row[3])

    # ------------------------------------------------------------------ save
    def save(self, ledger: Ledger, expected_serial: int) -> int:
        """Store `ledger` as serial `expected_serial + 1` if the stored serial is still `expected_serial`."""
        self._run("write", lambda conn: self._save(conn, ledger, expected_serial))
        ledger.serial = expected_serial + 1
        return ledger.serial

    def _save(self, conn: psycopg.Connection[Any], ledger: Ledger, expected: int) -> None:
        new = expected + 1
        save_id = str(uuid.uuid4())
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "SELECT lineage, serial FROM agora_reconciler_ledgers WHERE id = %s FOR UPDATE",
                (self._ledger_id,),
            )
            row = cur.fetchone()
            assert row is not None
            lineage, serial = row[0], int(row[1])
            if lineage is not None and lineage != ledger.lineage:
                raise LedgerConflictError(f"the ledger {self.location} belongs to another lineage ({lineage}); refusing to overwrite it")
            if lineage is not None and serial != expected:  # never saved: any serial may start it (state migrate)
                if self._landed(cur, ledger, expected, serial):
                    return
                raise LedgerConflictError(
                    f"the ledger {self.location} changed while this run was using it (serial {serial}, expected {expected}); re-run to plan again"
                )
            self._check_fence(cur)
            base = self._stored(cur, lineage, expected)
            upserts, removed, cache = delta(base, ledger.resources)
            if upserts or removed:
                cur.execute(SQL.retire, (new, self._ledger_id, [a for a, _ in upserts] + removed))
            if upserts:
                with cur.copy(SQL.copy_entries) as copy:
                    for address, text in upserts:
                        copy.write_row((self._ledger_id, address, new, text))
            cur.execute(SQL.set_head, (ledger.lineage, new, ledger.salt, LEDGER_VERSION, self._ledger_id))
            command = self._lock_command or default_command()
            cur.execute(SQL.add_serial, (self._ledger_id, new, save_id, who(), command, len(upserts) + len(removed), len(cache)))
            cur.execute(SQL.compact_journal, (self._ledger_id, expected))
            self._unacked = (save_id, expected, ledger.resources)
        self._unacked = None
        self._cache, self._cache_key = cache, (ledger.lineage, new)

    def _landed(self, cur: psycopg.Cursor[Any], ledger: Ledger, expected: int, serial: int) -> bool:
        """Did our previous attempt of this very save commit although its COMMIT got no answer?"""
        if self._unacked is None or serial != expected + 1:
            return False
        save_id, base, resources = self._unacked
        if base != expected or resources is not ledger.resources:
            return False
        cur.execute("SELECT save_id FROM agora_reconciler_serials WHERE ledger_id = %s AND serial = %s", (self._ledger_id, serial))
        row = cur.fetchone()
        if row is None or row[0] != save_id:
            return False
        self._unacked = None
        self._cache, self._cache_key = dict(ledger.resources), (ledger.lineage, serial)  # what that commit stored
        return True

    def _stored(self, cur: psycopg.Cursor[Any], lineage: str | None, serial: int) -> dict[str, dict[str, Any]]:
        if self._cache_key == (lineage, serial):
            return self._cache
        return self._current(cur)

    def _check_fence(self, cur: psycopg.Cursor[Any]) -> None:
        if self._lock_conn is None:
            return
        cur.execute(HOLDS, (RUN_LOCK.key_class, self._ledger_id, self._lock_conn.info.backend_pid))
        row = cur.fetchone()
        if row is None or row[0] != 1:
            raise LedgerConflictError(
                f"the lock on the ledger {self.location} was lost (its connection to PostgreSQL closed); nothing more is written by this run"
            )

    # ------------------------------------------------------------------ journal
    def append(self, records: list[dict[str, Any]]) -> None:
        """Append journal records (`{"op": "put", "address", "entry"}` or `{"op": "drop", "address"}`)
        on top of the serial last loaded or saved; durable when this returns. `load()` replays them."""
        if self._cache_key is None:
            raise LedgerError("append needs a loaded ledger")
        base = self._cache_key[1]

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT serial FROM agora_reconciler_ledgers WHERE id = %s FOR SHARE", (self._ledger_id,))
                row = cur.fetchone()
                if row is None or int(row[0]) != base:
                    raise LedgerConflictError(f"the ledger {self.location} changed while this run was using it; re-run to plan again")
                self._check_fence(cur)
                cur.execute(
                    "INSERT INTO agora_reconciler_journal (ledger_id, base_serial, records) VALUES (%s, %s, %s::jsonb)",
                    (self._ledger_id, base, json.dumps(records)),
                )

        self._run("append to", work)

    # ------------------------------------------------------------------ history
    def history(self) -> list[SavedSerial]:
        def work(conn: psycopg.Connection[Any]) -> list[SavedSerial]:
            rows = conn.execute(SQL.history, (self._ledger_id,)).fetchall()
            return [
                SavedSerial(int(s), at.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat(), by, cmd, int(ch), int(n))
                for s, at, by, cmd, ch, n in rows
            ]

        return self._run("read the history of", work)

    def load_at(self, serial: int) -> Ledger:
        """The ledger as it was saved at `serial` (refused when pruned or never saved)."""

        def work(conn: psycopg.Connection[Any]) -> Ledger:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                lineage, _, salt, version = self._head(cur)
                cur.execute("SELECT 1 FROM agora_reconciler_serials WHERE ledger_id = %s AND serial = %s", (self._ledger_id, serial))
                if cur.fetchone() is None:
                    raise LedgerError(f"serial {serial} is not in the history of the ledger {self.location} (never saved, or pruned)")
                cur.execute(SQL.at_serial, (self._ledger_id, serial, serial))
                resources = entries_from_rows(cur.fetchall())
            doc = {"version": version, "lineage": lineage, "serial": serial, "salt": salt, "resources": resources}
            return Ledger.from_dict(doc, f"{self.location} at serial {serial}", self.validate)

        return self._run("read the history of", work)

    def prune_history(self, before: datetime.datetime) -> int:
        """Forget the serials saved before `before` (the current one is always kept). Returns how many."""

        def work(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction(), conn.cursor() as cur:
                _, serial, _, _ = self._head(cur)
                cur.execute(SQL.oldest_kept, (serial, self._ledger_id, before))
                row = cur.fetchone()
                keep = min(int(row[0]) if row else serial, serial)
                cur.execute("DELETE FROM agora_reconciler_serials WHERE ledger_id = %s AND serial < %s", (self._ledger_id, keep))
                removed = cur.rowcount
                cur.execute(SQL.prune_entries, (self._ledger_id, keep))
                return removed

        return self._run("prune the history of", work)

    # ------------------------------------------------------------------ lock and leadership
    @contextlib.contextmanager
    def lock(self, timeout: float = 0.0, command: str = "") -> Iterator[None]:
        ledger_id = self.ledger_id
        conn = self._connect()
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while not self._try_advisory(conn, RUN_LOCK, ledger_id):
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    who = holder.describe() if holder else "another process"
                    waited = f" after waiting {timeout:g}s" if timeout else ""
                    raise LockedError(
                        f"the ledger {self.location} is locked by {who}{waited}; wait for it to finish or pass --lock-timeout"
                    )
                time.sleep(LOCK_POLL_S)
            self._lock_command = command or default_command()
            self._describe(conn, RUN_LOCK, ledger_id, self._lock_command)
            self._lock_conn = conn
            try:
                yield
            finally:
                self._lock_conn = None
                self._lock_command = ""
                with contextlib.suppress(psycopg.Error):  # a closed connection has released the lock already
                    conn.execute(RUN_LOCK.forget, (ledger_id, conn.info.backend_pid))
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK.key_class, ledger_id))
        finally:
            conn.close()

    def holder(self) -> LockHolder | None:
        """Who holds the run lock now (None when nobody does, or the holder left no description)."""
        return self._run("read the lock of", lambda conn: self._described(conn, RUN_LOCK))

    def try_lead(self, command: str = "") -> bool:
        """Become (or stay) the leader among `reconcile` replicas, without waiting. Leadership is an
        advisory lock on a dedicated connection: it lasts until `resign()` or the process dies."""
        with self._mutex:
            ledger_id = self.ledger_id
            conn = self._leader_conn
            if conn is not None:
                try:
                    if self._holds(conn, LEADERSHIP, ledger_id):
                        return True
                except psycopg.Error:
                    conn.close()
                    conn = self._leader_conn = None
            if conn is None or conn.closed:
                conn = self._leader_conn = self._connect()
            if not self._try_advisory(conn, LEADERSHIP, ledger_id):
                return False
            self._describe(conn, LEADERSHIP, ledger_id, command or default_command())
            return True

    def leader(self) -> LockHolder | None:
        """The replica that leads now, if any."""
        return self._run("read the leader of", lambda conn: self._described(conn, LEADERSHIP))

    def resign(self) -> None:
        with self._mutex:
            conn, self._leader_conn = self._leader_conn, None
            if conn is None:
                return
            with contextlib.suppress(psycopg.Error):  # a closed connection has released it already
                conn.execute(LEADERSHIP.forget, (self._ledger_id, conn.info.backend_pid))
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LEADERSHIP.key_class, self._ledger_id))
            conn.close()

    def _try_advisory(self, conn: psycopg.Connection[Any], kind: Advisory, ledger_id: int) -> bool:
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (kind.key_class, ledger_id)).fetchone()
        except psycopg.Error as exc:
            raise LedgerError(f"cannot lock the ledger {self.location}: {_first_line(exc)}") from None
        return bool(row and row[0])

    @staticmethod
    def _holds(conn: psycopg.Connection[Any], kind: Advisory, ledger_id: int) -> bool:
        row = conn.execute(HOLDS, (kind.key_class, ledger_id, conn.info.backend_pid)).fetchone()
        return bool(row and row[0] == 1)

    def _describe(self, conn: psycopg.Connection[Any], kind: Advisory, ledger_id: int, command: str) -> None:
        try:
            conn.execute(kind.describe, (ledger_id, conn.info.backend_pid, os.getpid(), socket.gethostname(), command, now_iso()))
        except psycopg.Error as exc:
            raise LedgerError(f"cannot lock the ledger {self.location}: {_first_line(exc)}") from None

    def _described(self, conn: psycopg.Connection[Any], kind: Advisory) -> LockHolder | None:
        row = conn.execute(kind.described, (kind.key_class, self._ledger_id)).fetchone()
        if row is None:
            return None
        since = row[3].astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat()
        return LockHolder(int(row[0]), str(row[1]), str(row[2]), since)

    def dump_errored(self, ledger: Ledger) -> str | None:
        """Nowhere local to write to: the caller prints what was done on stderr."""
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)
