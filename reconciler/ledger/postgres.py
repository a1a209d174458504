"""The PostgreSQL ledger backend (`state: postgresql://...`): the only module that imports psycopg.

Owns connecting (the DSN's password is a secret: registered with the redactor, shown masked; it
may also come from PGPASSWORD or ~/.pgpass through libpq), creating and migrating the tables on
first use (`pg_schema`), compare-and-set saves in one transaction that write only the entries
that changed, the history of every serial, the append-only journal, and the run lock: a
session-level advisory lock on a dedicated connection, so it dies with the process, with its
holder described in `agora_reconciler_locks`. While the lock is held every save checks that the
lock connection still holds it, so a run that lost its lock can never write.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import os
import socket
import sys
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
from .pg_schema import LOCK_CLASS, META_TABLE, MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION

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


def _canonical(entry: Any) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


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


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def _default_command() -> str:
    return " ".join(["agora-reconciler", *sys.argv[1:2]])


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


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
            conn.execute(
                "INSERT INTO agora_reconciler_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(max(current, target)),),
            )

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
            cur.execute(
                "SELECT records FROM agora_reconciler_journal WHERE ledger_id = %s AND base_serial = %s ORDER BY seq",
                (self._ledger_id, serial),
            )
            journal = [r for (batch,) in cur.fetchall() for r in batch]
        if lineage is None:
            ledger = Ledger()
        else:
            doc = {"version": version, "lineage": lineage, "serial": serial, "salt": salt, "resources": resources}
            ledger = Ledger.from_dict(doc, self.location, self.validate)
        self._cache = dict(ledger.resources)
        self._cache_key = (lineage, serial)
        _replay(ledger.resources, journal)
        ledger.journaled = len(journal)
        if self.validate is not None and journal:  # the snapshot was checked above
            Ledger.from_dict(ledger.to_dict(), f"{self.location} (with its journal)", self.validate)
        return ledger

    def _current(self, cur: psycopg.Cursor[Any]) -> dict[str, dict[str, Any]]:
        """The current entries (as text, joined into one JSON document: one parse, not one per row)."""
        cur.execute(
            "SELECT address, entry::text FROM agora_reconciler_resources WHERE ledger_id = %s AND to_serial IS NULL",
            (self._ledger_id,),
        )
        return _entries(cur.fetchall())

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
            upserts, removed, cache = _delta(base, ledger.resources)
            if upserts or removed:
                cur.execute(
                    "UPDATE agora_reconciler_resources SET to_serial = %s WHERE ledger_id = %s AND to_serial IS NULL AND address = ANY(%s)",
                    (new, self._ledger_id, [a for a, _ in upserts] + removed),
                )
            if upserts:
                with cur.copy("COPY agora_reconciler_resources (ledger_id, address, from_serial, entry) FROM STDIN") as copy:
                    for address, text in upserts:
                        copy.write_row((self._ledger_id, address, new, text))
            cur.execute(
                "UPDATE agora_reconciler_ledgers SET lineage = %s, serial = %s, salt = %s, version = %s WHERE id = %s",
                (ledger.lineage, new, ledger.salt, LEDGER_VERSION, self._ledger_id),
            )
            cur.execute(
                "INSERT INTO agora_reconciler_serials (ledger_id, serial, save_id, saved_by, command, changed, resources) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (self._ledger_id, new, save_id, _who(), self._lock_command or _default_command(), len(upserts) + len(removed), len(cache)),
            )
            cur.execute("DELETE FROM agora_reconciler_journal WHERE ledger_id = %s AND base_serial <= %s", (self._ledger_id, expected))
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
        cur.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::bigint::oid "
            "AND objid = %s::bigint::oid AND objsubid = 2 AND pid = %s AND granted",
            (LOCK_CLASS, self._ledger_id, self._lock_conn.info.backend_pid),
        )
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
            rows = conn.execute(
                "SELECT serial, saved_at, saved_by, command, changed, resources FROM agora_reconciler_serials "
                "WHERE ledger_id = %s ORDER BY serial DESC",
                (self._ledger_id,),
            ).fetchall()
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
                cur.execute(
                    "SELECT address, entry::text FROM agora_reconciler_resources "
                    "WHERE ledger_id = %s AND from_serial <= %s AND (to_serial IS NULL OR to_serial > %s)",
                    (self._ledger_id, serial, serial),
                )
                resources = _entries(cur.fetchall())
            doc = {"version": version, "lineage": lineage, "serial": serial, "salt": salt, "resources": resources}
            return Ledger.from_dict(doc, f"{self.location} at serial {serial}", self.validate)

        return self._run("read the history of", work)

    def prune_history(self, before: datetime.datetime) -> int:
        """Forget the serials saved before `before` (the current one is always kept). Returns how many."""

        def work(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction(), conn.cursor() as cur:
                _, serial, _, _ = self._head(cur)
                cur.execute(
                    "SELECT coalesce(min(serial), %s) FROM agora_reconciler_serials WHERE ledger_id = %s AND saved_at >= %s",
                    (serial, self._ledger_id, before),
                )
                row = cur.fetchone()
                keep = min(int(row[0]) if row else serial, serial)
                cur.execute("DELETE FROM agora_reconciler_serials WHERE ledger_id = %s AND serial < %s", (self._ledger_id, keep))
                removed = cur.rowcount
                cur.execute(
                    "DELETE FROM agora_reconciler_resources WHERE ledger_id = %s AND to_serial IS NOT NULL AND to_serial <= %s",
                    (self._ledger_id, keep),
                )
                return removed

        return self._run("prune the history of", work)

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self, timeout: float = 0.0, command: str = "") -> Iterator[None]:
        ledger_id = self.ledger_id
        conn = self._connect()
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while not self._try_lock(conn, ledger_id):
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    who = holder.describe() if holder else "another process"
                    waited = f" after waiting {timeout:g}s" if timeout else ""
                    raise LockedError(
                        f"the ledger {self.location} is locked by {who}{waited}; wait for it to finish or pass --lock-timeout"
                    )
                time.sleep(LOCK_POLL_S)
            self._lock_command = command or _default_command()
            self._describe_holder(conn, ledger_id)
            self._lock_conn = conn
            try:
                yield
            finally:
                self._lock_conn = None
                self._lock_command = ""
                with contextlib.suppress(psycopg.Error):  # a closed connection has released the lock already
                    conn.execute(
                        "DELETE FROM agora_reconciler_locks WHERE ledger_id = %s AND backend_pid = %s", (ledger_id, conn.info.backend_pid)
                    )
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, ledger_id))
        finally:
            conn.close()

    def _try_lock(self, conn: psycopg.Connection[Any], ledger_id: int) -> bool:
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, ledger_id)).fetchone()
        except psycopg.Error as exc:
            raise LedgerError(f"cannot lock the ledger {self.location}: {_first_line(exc)}") from None
        return bool(row and row[0])

    def _describe_holder(self, conn: psycopg.Connection[Any], ledger_id: int) -> None:
        try:
            conn.execute(
                "INSERT INTO agora_reconciler_locks (ledger_id, backend_pid, pid, host, command, since) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (ledger_id) DO UPDATE SET backend_pid = EXCLUDED.backend_pid, pid = EXCLUDED.pid, host = EXCLUDED.host, "
                "command = EXCLUDED.command, since = EXCLUDED.since",
                (ledger_id, conn.info.backend_pid, os.getpid(), socket.gethostname(), self._lock_command, _now_iso()),
            )
        except psycopg.Error as exc:
            raise LedgerError(f"cannot lock the ledger {self.location}: {_first_line(exc)}") from None

    def holder(self) -> LockHolder | None:
        """Who holds the lock now (None when nobody does, or the holder left no description)."""

        def work(conn: psycopg.Connection[Any]) -> LockHolder | None:
            row = conn.execute(
                "SELECT h.pid, h.host, h.command, h.since FROM agora_reconciler_locks h JOIN pg_locks k "
                "ON k.locktype = 'advisory' AND k.classid = %s::bigint::oid AND k.objid = h.ledger_id::oid AND k.objsubid = 2 "
                "AND k.pid = h.backend_pid AND k.granted WHERE h.ledger_id = %s",
                (LOCK_CLASS, self._ledger_id),
            ).fetchone()
            if row is None:
                return None
            since = row[3].astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat()
            return LockHolder(int(row[0]), str(row[1]), str(row[2]), since)

        return self._run("read the lock of", work)

    def dump_errored(self, ledger: Ledger) -> str | None:
        """Nowhere local to write to: the caller prints what was done on stderr."""
        return None


def _delta(
    base: dict[str, dict[str, Any]], resources: dict[str, dict[str, Any]]
) -> tuple[list[tuple[str, str]], list[str], dict[str, dict[str, Any]]]:
    """(changed or new entries as JSON, removed addresses, the new cache). Entries are replaced,
    never edited in place, so an entry that is the very object stored needs no comparison."""
    upserts: list[tuple[str, str]] = []
    cache: dict[str, dict[str, Any]] = {}
    for address, entry in resources.items():
        known = base.get(address)
        cache[address] = entry
        if known is entry or (known is not None and known == entry):
            continue
        upserts.append((address, _canonical(entry)))
    removed = [a for a in base if a not in resources]
    return upserts, removed, cache


def _entries(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = json.loads("{" + ",".join(f"{json.dumps(a)}:{text}" for a, text in rows) + "}")
    return result


def _replay(resources: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> None:
    for record in records:
        if record.get("op") == "put":
            resources[str(record["address"])] = dict(record["entry"])
        elif record.get("op") == "drop":
            resources.pop(str(record["address"]), None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)
