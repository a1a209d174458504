"""The PostgreSQL ledger's tables and their forward migrations (SQL only; no driver here).

One database holds any number of ledgers, one row each in `agora_reconciler_ledgers`, keyed by
name. A resource entry is stored once per version (`from_serial`, `to_serial`; NULL `to_serial`
is the current one), so a save writes only what changed and every saved serial can be read back.
`agora_reconciler_serials` records who saved each serial and when; `agora_reconciler_locks` holds
the advisory lock holder's description; `agora_reconciler_journal` holds appended records not yet
compacted into a serial. `agora_reconciler_meta.schema_version` says which migrations ran.
Migrations only ever add: a database written by a newer version is refused, never downgraded.
"""

from __future__ import annotations

# pg_advisory_lock(LOCK_CLASS, ledger id) is a ledger's run lock; (LOCK_CLASS, 0) serialises migrations.
LOCK_CLASS = 0x61677263  # "agrc"
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
)

SCHEMA_VERSION = len(MIGRATIONS)
