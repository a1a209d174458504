"""The ownership ledger: what the tool owns and what it last applied, and where it is stored.

The document (DESIGN.md section 4) is `{version, lineage, serial, salt, resources}`; resources are
keyed by address. It is the only place that maps a logical agent name to its `agent_id`. Applied
essences hold secrets only as salted HMAC fingerprints (`secrets.fingerprint`).

This package owns the model (`Ledger`, `LockHolder`), the storage interface `Backend` (`load`,
`save(ledger, expected_serial)`, `append(records)`, `lock`, `holder`, `dump_errored`) and
`open_backend`, which picks the backend for a `state` setting. Backends: `file.FileBackend`,
`postgres.PostgresBackend` (a `HistoryBackend`: every serial kept, and a `LeaderBackend`: one
`reconcile` replica leads). `journal.LedgerJournal`
group-commits an apply's changes to the backend's journal and compacts it; `transfer` moves a
ledger between backends.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets as pysecrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import LedgerError

LEDGER_VERSION = 1
Validator = Callable[[Any], list[str]]  # a ledger document -> what is wrong with it (empty: valid)


@runtime_checkable
class RemembersChecks(Protocol):
    """A validator that remembers, across runs, which snapshot bytes (by digest) passed it: a file
    backend then checks bytes it has seen pass only once, whatever process reads them again."""

    def passed(self, digest: bytes) -> bool: ...

    def record(self, digest: bytes) -> None: ...


def encode_entry(entry: dict[str, Any]) -> str:
    """A resource entry's JSON text as the snapshot and the file journal write it (keys sorted)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ": "))


@dataclass
class Ledger:
    lineage: str = field(default_factory=lambda: _new_lineage())
    serial: int = 0
    salt: str = field(default_factory=lambda: pysecrets.token_hex(16))
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = LEDGER_VERSION
    # address -> (entry object, its JSON): entries are replaced, never edited, so identity is enough
    _encoded: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict, repr=False, compare=False)
    journaled: int = field(default=0, compare=False)  # journal records replayed by load (not yet compacted)

    def encode(self, serial: int) -> bytes:
        """The file form: header fields, then one compact line per resource (diff-friendly)."""
        resources = self.resources
        lines = [f"    {json.dumps(address)}: {self.entry_json(address, resources[address])}" for address in sorted(resources)]
        for gone in set(self._encoded) - set(resources):
            self._encoded.pop(gone, None)
        head = f'{{\n  "version": {self.version},\n  "lineage": {json.dumps(self.lineage)},\n  "serial": {serial},\n  "salt": {json.dumps(self.salt)},\n'
        body = '  "resources": {\n' + ",\n".join(lines) + ("\n  }\n}\n" if lines else "  }\n}\n")
        return (head + body).encode()

    def entry_json(self, address: str, entry: dict[str, Any]) -> str:
        """`entry` as `encode` writes it (keys sorted), kept while `address` holds this very entry
        object (entries are replaced, never edited): the file journal writes an entry in this form,
        so the snapshot that compacts the journal encodes each entry once. Any thread may call it."""
        cached = self._encoded.get(address)
        if cached is not None and cached[0] is entry:
            return cached[1]
        text = encode_entry(entry)
        self._encoded[address] = (entry, text)
        return text

    def snapshot(self) -> Ledger:
        """A copy to save while this one keeps changing: entries are shared (they are replaced,
        never edited), and so is the encoding cache (`entry_json`: checked by identity, so an entry
        encoded by another thread meanwhile is never taken for another)."""
        return Ledger(self.lineage, self.serial, self.salt, dict(self.resources), self.version, self._encoded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "lineage": self.lineage,
            "serial": self.serial,
            "salt": self.salt,
            "resources": {k: self.resources[k] for k in sorted(self.resources)},
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str = "ledger", validate: Validator | None = None) -> Ledger:
        """The ledger in `doc`; `validate` (the schema check, given by the caller: `jsonschema`
        lives in `config`) returns what is wrong with it, and anything wrong refuses the load."""
        if not isinstance(doc, dict) or not isinstance(doc.get("resources"), dict):
            raise LedgerError(f"{source} is not an agora-reconciler ledger (no resources mapping)")
        if doc.get("version") != LEDGER_VERSION:
            raise LedgerError(f"{source} has ledger version {doc.get('version')!r}; this tool reads version {LEDGER_VERSION}")
        problems = validate(doc) if validate is not None else []
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise LedgerError(f"{source} does not follow the ledger schema (schemas/ledger.schema.json); nothing was changed:\n{listed}")
        try:
            return cls(
                lineage=str(doc["lineage"]),
                serial=int(doc["serial"]),
                salt=str(doc["salt"]),
                resources={str(k): dict(v) for k, v in doc["resources"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"{source} is damaged: {exc}") from None

    @property
    def effective_serial(self) -> int:
        """The serial this content gets when compacted: a replayed journal counts as one save."""
        return self.serial + (1 if self.journaled else 0)

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if k.startswith(kind + "/")}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in self.resources:
            kind = key.split("/", 1)[0]
            out[kind] = out.get(kind, 0) + 1
        return out


def _new_lineage() -> str:
    import uuid  # only a new ledger needs one (uuid imports platform)

    return str(uuid.uuid4())


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    command: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command!r}) since {self.since}"


@dataclass(frozen=True)
class SavedSerial:
    """One entry of a ledger's history: which serial, when, by whom, how much changed."""

    serial: int
    saved_at: str
    saved_by: str
    command: str
    changed: int
    resources: int


JournalRecord = dict[str, Any]  # {"op": "put", "address", "entry"} or {"op": "drop", "address"}
EntryEncoder = Callable[[str, dict[str, Any]], str]  # (address, entry) -> the entry's JSON text: `Ledger.entry_json`


class Backend(Protocol):
    """Where a ledger lives: a snapshot plus an append-only journal of the changes since.

    - `load()`: the snapshot with the journal's valid records replayed on top (`journaled` counts
      them; a torn or out-of-sequence record ends the replay).
    - `append(records, encoded=None)`: durable on return; records extend the snapshot last loaded
      or saved through this backend; constant bytes and CPU per record, whatever the ledger's size.
      `encoded`, when given, is `Ledger.entry_json` of the ledger being journaled: an entry's JSON
      text already worked out (a backend may use it or not).
    - `save(ledger, expected_serial)`: a new snapshot `expected_serial + 1` (refused if the stored
      serial moved), which also discards the journal it compacts. Returns the new serial.
    - `lock(timeout, command)`: exclusive while an apply runs, naming its holder.
    - `dump_errored(ledger)`: best effort, where what was done went when a write failed.
    """

    location: str

    def load(self) -> Ledger: ...

    def save(self, ledger: Ledger, expected_serial: int) -> int: ...

    def append(self, records: list[JournalRecord], encoded: EntryEncoder | None = None) -> None: ...

    def lock(self, timeout: float = 0.0, command: str = "") -> contextlib.AbstractContextManager[None]: ...

    def holder(self) -> LockHolder | None: ...

    def dump_errored(self, ledger: Ledger) -> str | None: ...


@runtime_checkable
class HistoryBackend(Backend, Protocol):
    """A backend that keeps every saved serial (PostgreSQL)."""

    def history(self) -> list[SavedSerial]: ...

    def load_at(self, serial: int) -> Ledger: ...

    def prune_history(self, before: datetime.datetime) -> int: ...


@runtime_checkable
class LeaderBackend(Backend, Protocol):
    """A backend that elects one leader among `reconcile` replicas (PostgreSQL): leadership is
    held until `resign()` or the process dies, and is separate from the run lock."""

    def try_lead(self, command: str = "") -> bool: ...

    def leader(self) -> LockHolder | None: ...

    def resign(self) -> None: ...


def with_history(backend: Backend) -> HistoryBackend:
    if not isinstance(backend, HistoryBackend):
        raise LedgerError(
            f"the ledger {backend.location} keeps no history (a file ledger keeps only the previous version, as .backup); "
            "a PostgreSQL ledger keeps every serial"
        )
    return backend


from .file import FileBackend, atomic_write  # noqa: E402 - file.py builds on the model above

__all__ = [
    "LEDGER_VERSION",
    "Backend",
    "EntryEncoder",
    "FileBackend",
    "HistoryBackend",
    "JournalRecord",
    "LeaderBackend",
    "Ledger",
    "LockHolder",
    "RemembersChecks",
    "SavedSerial",
    "Validator",
    "atomic_write",
    "encode_entry",
    "is_postgresql",
    "open_backend",
    "with_history",
]


def is_postgresql(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def open_backend(location: str, name: str = "default", validate: Validator | None = None) -> Backend:
    """The backend for a `state` setting: a `postgresql://` URL (ledger `name` in that database)
    or a file path. `validate` checks every ledger document the backend loads."""
    if is_postgresql(location):
        from .postgres import PostgresBackend  # psycopg is imported only for a PostgreSQL ledger

        return PostgresBackend(location, name, validate=validate)
    return FileBackend(location, validate=validate)
