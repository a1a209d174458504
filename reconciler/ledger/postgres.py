"""The PostgreSQL ledger backend (`state: postgresql://...`): the only module that imports psycopg.

Owns connecting (the DSN's password is a secret: registered with the redactor, shown masked; it
may also come from PGPASSWORD or ~/.pgpass through libpq), creating and migrating the tables on
first use (`pg_schema`), compare-and-set saves in one transaction that write only the entries
that changed, the history of every serial, the append-only journal, and the run lock: a
session-level advisory lock on a dedicated connection, so it dies with the process, with its
holder described in `agora_reconciler_locks`. While the lock is held every save checks that the
lock connection still holds it, so a run that lost its lock can never write. Leadership among
`reconcile` replicas is a second advisory lock, kept on its own connection across cycles.
SQL text lives in `pg_schema`; the pure helpers (delta, replay, row shaping) in `pg_rows`.
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

from ..errors import LedgerConflictError, LedgerError
from ..secrets import MASK, REDACTOR, redact
from . import LEDGER_VERSION, EntryEncoder, Ledger, LockHolder, SavedSerial, Validator, pg_rows
from .pg_schema import CONNECT_DEFAULTS, HOLDS, LEADERSHIP, META_TABLE, RUN_LOCK, SCHEMA_VERSION, SQL, Advisory, migrations

T = TypeVar("T")
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
            raise LedgerError(f"cannot connect to the ledger database {self.masked_dsn}: {pg_rows.first_line(exc)}") from None

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
                    raise LedgerError(f"cannot {what} the ledger in {self.masked_dsn}: {pg_rows.first_line(exc)}") from None
                self._conn = conn
            try:
                return work(self._conn)
            except psycopg.Error as exc:
                if self._conn.broken or self._conn.closed:
                    self._conn.close()
                    self._conn = None
                raise LedgerError(f"cannot {what} the ledger in {self.masked_dsn}: {pg_rows.first_line(exc)}") from None

    def close(self) -> None:
        self.resign()
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @staticmethod
    def _ensure_schema(conn: psycopg.Connection[Any], target: int) -> None:
        """Create the tables or run the missing forward migrations (serialised by an advisory lock)."""
        if conn.execute(SQL.has_meta).fetchone() == (True,):
            row = conn.execute(SQL.schema_version).fetchone()
            if row is not None and int(row[0]) == target:
                return
        with conn.transaction():
            conn.execute(SQL.migration_lock)
            conn.execute(META_TABLE)
            row = conn.execute(SQL.schema_version).fetchone()
            current = int(row[0]) if row else 0
            for statement in migrations(current, target):
                conn.execute(statement)  # type: ignore[arg-type]  # constant SQL from pg_schema
            conn.execute(SQL.set_version, (str(max(current, target)),))

    def _ensure_ledger(self, conn: psycopg.Connection[Any]) -> int:
        conn.execute(SQL.add_ledger, (self.name,))
        row = conn.execute(SQL.ledger_id, (self.name,)).fetchone()
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
            cur.execute(SQL.snapshot)
            head = self._head(cur)
            resources = self._current(cur)
            cur.execute(SQL.journal, (self._ledger_id, head[1]))
            journal = [r for (batch,) in cur.fetchall() for r in batch]
        ledger = Ledger() if head[0] is None else Ledger.from_dict(pg_rows.snapshot_doc(head, resources), self.location, self.validate)
        self._cache = dict(ledger.resources)
        self._cache_key = (head[0], head[1])
        pg_rows.replay(ledger.resources, journal)
        ledger.journaled = len(journal)
        if self.validate is not None and journal:  # the snapshot was checked above
            Ledger.from_dict(ledger.to_dict(), f"{self.location} (with its journal)", self.validate)
        return ledger

    def _current(self, cur: psycopg.Cursor[Any]) -> dict[str, dict[str, Any]]:
        """The current entries (as text, joined into one JSON document: one parse, not one per row)."""
        cur.execute(SQL.current, (self._ledger_id,))
        return pg_rows.entries_from_rows(cur.fetchall())

    def _head(self, cur: psycopg.Cursor[Any]) -> tuple[str | None, int, str | None, int]:
        cur.execute(SQL.head, (self._ledger_id,))
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
            cur.execute(SQL.head_for_update, (self._ledger_id,))
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
            upserts, removed, cache = pg_rows.delta(base, ledger.resources)
            if upserts or removed:
                cur.execute(SQL.retire, (new, self._ledger_id, [a for a, _ in upserts] + removed))
            if upserts:
                with cur.copy(SQL.copy_entries) as copy:
                    for address, text in upserts:
                        copy.write_row((self._ledger_id, address, new, text))
            cur.execute(SQL.set_head, (ledger.lineage, new, ledger.salt, LEDGER_VERSION, self._ledger_id))
            command = self._lock_command or pg_rows.default_command()
            cur.execute(SQL.add_serial, (self._ledger_id, new, save_id, pg_rows.who(), command, len(upserts) + len(removed), len(cache)))
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
        cur.execute(SQL.save_id, (self._ledger_id, serial))
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
    def append(self, records: list[dict[str, Any]], encoded: EntryEncoder | None = None) -> None:
        """Append journal records (`{"op": "put", "address", "entry"}` or `{"op": "drop", "address"}`)
        on top of the serial last loaded or saved; durable when this returns. `load()` replays them.
        (`encoded` is not used: the records go to PostgreSQL as one JSON document.)"""
        if self._cache_key is None:
            raise LedgerError("append needs a loaded ledger")
        base = self._cache_key[1]

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(SQL.serial_for_share, (self._ledger_id,))
                row = cur.fetchone()
                if row is None or int(row[0]) != base:
                    raise LedgerConflictError(f"the ledger {self.location} changed while this run was using it; re-run to plan again")
                self._check_fence(cur)
                cur.execute(SQL.append, (self._ledger_id, base, json.dumps(records)))

        self._run("append to", work)

    # ------------------------------------------------------------------ history
    def history(self) -> list[SavedSerial]:
        return self._run(
            "read the history of", lambda conn: pg_rows.saved_serials(conn.execute(SQL.history, (self._ledger_id,)).fetchall())
        )

    def load_at(self, serial: int) -> Ledger:
        """The ledger as it was saved at `serial` (refused when pruned or never saved)."""

        def work(conn: psycopg.Connection[Any]) -> Ledger:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(SQL.snapshot)
                lineage, _, salt, version = self._head(cur)
                cur.execute(SQL.has_serial, (self._ledger_id, serial))
                if cur.fetchone() is None:
                    raise LedgerError(f"serial {serial} is not in the history of the ledger {self.location} (never saved, or pruned)")
                cur.execute(SQL.at_serial, (self._ledger_id, serial, serial))
                doc = pg_rows.snapshot_doc((lineage, serial, salt, version), pg_rows.entries_from_rows(cur.fetchall()))
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
                cur.execute(SQL.prune_serials, (self._ledger_id, keep))
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
                    raise pg_rows.locked_error(self.location, self.holder(), timeout)
                time.sleep(LOCK_POLL_S)
            self._lock_command = command or pg_rows.default_command()
            self._describe(conn, RUN_LOCK, ledger_id, self._lock_command)
            self._lock_conn = conn
            try:
                yield
            finally:
                self._lock_conn = None
                self._lock_command = ""
                with contextlib.suppress(psycopg.Error):  # a closed connection has released the lock already
                    conn.execute(RUN_LOCK.forget, (ledger_id, conn.info.backend_pid))
                    conn.execute(SQL.unlock, (RUN_LOCK.key_class, ledger_id))
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
            self._describe(conn, LEADERSHIP, ledger_id, command or pg_rows.default_command())
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
                conn.execute(SQL.unlock, (LEADERSHIP.key_class, self._ledger_id))
            conn.close()

    def _try_advisory(self, conn: psycopg.Connection[Any], kind: Advisory, ledger_id: int) -> bool:
        try:
            row = conn.execute(SQL.try_lock, (kind.key_class, ledger_id)).fetchone()
        except psycopg.Error as exc:
            raise LedgerError(f"cannot lock the ledger {self.location}: {pg_rows.first_line(exc)}") from None
        return bool(row and row[0])

    @staticmethod
    def _holds(conn: psycopg.Connection[Any], kind: Advisory, ledger_id: int) -> bool:
        row = conn.execute(HOLDS, (kind.key_class, ledger_id, conn.info.backend_pid)).fetchone()
        return bool(row and row[0] == 1)

    def _describe(self, conn: psycopg.Connection[Any], kind: Advisory, ledger_id: int, command: str) -> None:
        try:
            conn.execute(kind.describe, (ledger_id, conn.info.backend_pid, os.getpid(), socket.gethostname(), command, pg_rows.now_iso()))
        except psycopg.Error as exc:
            raise LedgerError(f"cannot lock the ledger {self.location}: {pg_rows.first_line(exc)}") from None

    def _described(self, conn: psycopg.Connection[Any], kind: Advisory) -> LockHolder | None:
        return pg_rows.lock_holder(conn.execute(kind.described, (kind.key_class, self._ledger_id)).fetchone())

    def dump_errored(self, ledger: Ledger) -> str | None:
        """Nowhere local to write to: the caller prints what was done on stderr."""
        return None
