"""The PostgreSQL ledger's pure helpers (no driver here): what a save writes (the delta against
the stored entries), rows back into entries, history serials and lock holders, journal replay,
who is writing, the refusal of a held lock, and the one-line, redacted form of a driver error."""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket
import sys
from typing import Any

from ..errors import LockedError
from ..secrets import redact
from . import LockHolder, SavedSerial


def canonical(entry: Any) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def default_command() -> str:
    return " ".join(["agora-reconciler", *sys.argv[1:2]])


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def delta(
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
        upserts.append((address, canonical(entry)))
    removed = [a for a in base if a not in resources]
    return upserts, removed, cache


def entries_from_rows(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = json.loads("{" + ",".join(f"{json.dumps(a)}:{text}" for a, text in rows) + "}")
    return result


def replay(resources: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> None:
    for record in records:
        if record.get("op") == "put":
            resources[str(record["address"])] = dict(record["entry"])
        elif record.get("op") == "drop":
            resources.pop(str(record["address"]), None)


def utc_iso(at: datetime.datetime) -> str:
    return at.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat()


def snapshot_doc(head: tuple[str | None, int, str | None, int], resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ledger document from a head row (lineage, serial, salt, version) and its entries."""
    lineage, serial, salt, version = head
    return {"version": version, "lineage": lineage, "serial": serial, "salt": salt, "resources": resources}


def saved_serials(rows: list[tuple[Any, ...]]) -> list[SavedSerial]:
    """History rows (serial, saved_at, saved_by, command, changed, resources) as `SavedSerial`s."""
    return [SavedSerial(int(s), utc_iso(at), by, cmd, int(ch), int(n)) for s, at, by, cmd, ch, n in rows]


def lock_holder(row: tuple[Any, ...] | None) -> LockHolder | None:
    """A holder description row (pid, host, command, since), if any."""
    return None if row is None else LockHolder(int(row[0]), str(row[1]), str(row[2]), utc_iso(row[3]))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def locked_error(location: str, holder: LockHolder | None, timeout: float) -> LockedError:
    """The refusal of a run lock that `holder` held for all of `timeout` seconds."""
    who = holder.describe() if holder else "another process"
    waited = f" after waiting {timeout:g}s" if timeout else ""
    return LockedError(f"the ledger {location} is locked by {who}{waited}; wait for it to finish or pass --lock-timeout")
