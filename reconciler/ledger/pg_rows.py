"""The PostgreSQL ledger's pure helpers (no driver here): what a save writes (the delta against
the stored entries), rows back into entries, journal replay, and who is writing."""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket
import sys
from typing import Any


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
