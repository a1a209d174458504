"""The PostgreSQL ledger's tables, their forward migrations, the statements and the connection
parameters every session asks for (SQL and settings only; no driver here).

One database holds any number of ledgers, one row each in `agora_reconciler_ledgers`, keyed by
name. A resource entry is stored once per version (`from_serial`, `to_serial`; NULL `to_serial`
is the current one), so a save writes only what changed and every saved serial can be read back.
`agora_reconciler_serials` records who saved each serial and when; `agora_reconciler_locks` holds
the advisory lock holder's description; `agora_reconciler_journal` holds appended records not yet
compacted into a serial; `agora_reconciler_leaders` describes the `reconcile` replica that
leads. `agora_reconciler_meta.schema_version` says which migrations ran.
Migrations only ever add: a database written by a newer version is refused, never downgraded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LedgerError

# libpq parameters added to the DSN unless it sets them: a dead server or network is noticed in about a minute
CONNECT_DEFAULTS = {
    "application_name": "agora-reconciler",
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

# pg_advisory_lock(LOCK_CLASS, ledger id) is a ledger's run lock; (LOCK_CLASS, 0) serialises migrations;
# (LEADER_CLASS, ledger id) is held by the one `reconcile` replica that acts (its leader).
LOCK_CLASS = 0x61677263  # "agrc"
LEADER_CLASS = 0x61677264  # "agrd"
MIGRATION_LOCK = 0

META_TABLE = """
CREATE TABLE IF NOT EXISTS agora_reconciler_meta (
    key text PRIMARY KEY,
    value text NOT NULL
)
"""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: ledgers, resource versions, serial history, lock holders
    (
        """
        CREATE TABLE agora_reconciler_ledgers (
            id bigserial PRIMARY KEY,
            name text NOT NULL UNIQUE,
            lineage text,
            serial bigint NOT NULL DEFAULT 0,
            salt text,
            version integer NOT NULL DEFAULT 1,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE agora_reconciler_serials (
            ledger_id bigint NOT NULL REFERENCES agora_reconciler_ledgers (id) ON DELETE CASCADE,
            serial bigint NOT NULL,
            save_id text NOT NULL,
            saved_at timestamptz NOT NULL DEFAULT now(),
            saved_by text NOT NULL,
            command text NOT NULL,
            changed integer NOT NULL,
            resources integer NOT NULL,
            PRIMARY KEY (ledger_id, serial)
        )
        """,
        """
        CREATE TABLE agora_reconciler_resources (
            ledger_id bigint NOT NULL REFERENCES agora_reconciler_ledgers (id) ON DELETE CASCADE,
            address text NOT NULL,
            from_serial bigint NOT NULL,
            to_serial bigint,
            entry jsonb NOT NULL,
            PRIMARY KEY (ledger_id, address, from_serial)
        )
        """,
        """
        CREATE UNIQUE INDEX agora_reconciler_resources_current
            ON agora_reconciler_resources (ledger_id, address) WHERE to_serial IS NULL
        """,
        """
        CREATE TABLE agora_reconciler_locks (
            ledger_id bigint PRIMARY KEY REFERENCES agora_reconciler_ledgers (id) ON DELETE CASCADE,
            backend_pid integer NOT NULL,
            pid integer NOT NULL,
            host text NOT NULL,
            command text NOT NULL,
            since timestamptz NOT NULL
        )
        """,
    ),
    # 2: the append-only journal (records appended between two saves, replayed by load)
    (
        """
        CREATE TABLE agora_reconciler_journal (
            ledger_id bigint NOT NULL REFERENCES agora_reconciler_ledgers (id) ON DELETE CASCADE,
            seq bigserial,
            base_serial bigint NOT NULL,
            records jsonb NOT NULL,
            appended_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (ledger_id, seq)
        )
        """,
    ),
    # 3: the leading reconcile replica's description (beside its advisory lock)
    (
        """
        CREATE TABLE agora_reconciler_leaders (
            ledger_id bigint PRIMARY KEY REFERENCES agora_reconciler_ledgers (id) ON DELETE CASCADE,
            backend_pid integer NOT NULL,
            pid integer NOT NULL,
            host text NOT NULL,
            command text NOT NULL,
            since timestamptz NOT NULL
        )
        """,
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrations(current: int, target: int) -> list[str]:
    """The statements that bring tables of schema version `current` to `target` (tables newer than
    this code knows are refused: migrations only go forward)."""
    if current > SCHEMA_VERSION:
        raise LedgerError(
            f"the ledger tables have schema version {current}, newer than this agora-reconciler knows ({SCHEMA_VERSION}); upgrade it"
        )
    return [statement for version in range(current, target) for statement in MIGRATIONS[version]]


@dataclass(frozen=True)
class Advisory:
    """An advisory lock on (key_class, ledger id) and the table describing its holder."""

    key_class: int
    table: str

    @property
    def describe(self) -> str:
        return (
            f"INSERT INTO {self.table} (ledger_id, backend_pid, pid, host, command, since) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (ledger_id) DO UPDATE SET backend_pid = EXCLUDED.backend_pid, pid = EXCLUDED.pid, host = EXCLUDED.host, "
            "command = EXCLUDED.command, since = EXCLUDED.since"
        )

    @property
    def forget(self) -> str:
        return f"DELETE FROM {self.table} WHERE ledger_id = %s AND backend_pid = %s"

    @property
    def described(self) -> str:
        """The description, only while the session that wrote it still holds the lock."""
        return (
            f"SELECT h.pid, h.host, h.command, h.since FROM {self.table} h JOIN pg_locks k "
            "ON k.locktype = 'advisory' AND k.classid = %s::bigint::oid AND k.objid = h.ledger_id::oid AND k.objsubid = 2 "
            "AND k.pid = h.backend_pid AND k.granted WHERE h.ledger_id = %s"
        )


RUN_LOCK = Advisory(LOCK_CLASS, "agora_reconciler_locks")
LEADERSHIP = Advisory(LEADER_CLASS, "agora_reconciler_leaders")
# 1 when session `pid` holds the advisory lock (key_class, ledger id)
HOLDS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::bigint::oid "
    "AND objid = %s::bigint::oid AND objsubid = 2 AND pid = %s AND granted"
)


class SQL:
    """The statements of loads, saves, history and locks (parameters in order of the %s)."""

    has_meta = "SELECT to_regclass('agora_reconciler_meta') IS NOT NULL"
    schema_version = "SELECT value FROM agora_reconciler_meta WHERE key = 'schema_version'"
    migration_lock = f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {MIGRATION_LOCK})"
    add_ledger = "INSERT INTO agora_reconciler_ledgers (name) VALUES (%s) ON CONFLICT (name) DO NOTHING"
    ledger_id = "SELECT id FROM agora_reconciler_ledgers WHERE name = %s"
    snapshot = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    head = "SELECT lineage, serial, salt, version FROM agora_reconciler_ledgers WHERE id = %s"
    head_for_update = "SELECT lineage, serial FROM agora_reconciler_ledgers WHERE id = %s FOR UPDATE"
    serial_for_share = "SELECT serial FROM agora_reconciler_ledgers WHERE id = %s FOR SHARE"
    save_id = "SELECT save_id FROM agora_reconciler_serials WHERE ledger_id = %s AND serial = %s"
    append = "INSERT INTO agora_reconciler_journal (ledger_id, base_serial, records) VALUES (%s, %s, %s::jsonb)"
    try_lock = "SELECT pg_try_advisory_lock(%s, %s)"
    unlock = "SELECT pg_advisory_unlock(%s, %s)"
    set_version = "INSERT INTO agora_reconciler_meta (key, value) VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    current = "SELECT address, entry::text FROM agora_reconciler_resources WHERE ledger_id = %s AND to_serial IS NULL"
    journal = "SELECT records FROM agora_reconciler_journal WHERE ledger_id = %s AND base_serial = %s ORDER BY seq"
    retire = "UPDATE agora_reconciler_resources SET to_serial = %s WHERE ledger_id = %s AND to_serial IS NULL AND address = ANY(%s)"
    copy_entries = "COPY agora_reconciler_resources (ledger_id, address, from_serial, entry) FROM STDIN"
    set_head = "UPDATE agora_reconciler_ledgers SET lineage = %s, serial = %s, salt = %s, version = %s WHERE id = %s"
    add_serial = (
        "INSERT INTO agora_reconciler_serials (ledger_id, serial, save_id, saved_by, command, changed, resources) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )
    compact_journal = "DELETE FROM agora_reconciler_journal WHERE ledger_id = %s AND base_serial <= %s"
    history = "SELECT serial, saved_at, saved_by, command, changed, resources FROM agora_reconciler_serials WHERE ledger_id = %s ORDER BY serial DESC"
    at_serial = (
        "SELECT address, entry::text FROM agora_reconciler_resources "
        "WHERE ledger_id = %s AND from_serial <= %s AND (to_serial IS NULL OR to_serial > %s)"
    )
    has_serial = "SELECT 1 FROM agora_reconciler_serials WHERE ledger_id = %s AND serial = %s"
    prune_serials = "DELETE FROM agora_reconciler_serials WHERE ledger_id = %s AND serial < %s"
    oldest_kept = "SELECT coalesce(min(serial), %s) FROM agora_reconciler_serials WHERE ledger_id = %s AND saved_at >= %s"
    prune_entries = "DELETE FROM agora_reconciler_resources WHERE ledger_id = %s AND to_serial IS NOT NULL AND to_serial <= %s"
