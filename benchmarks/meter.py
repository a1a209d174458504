"""Runs the CLI (`python -m reconciler ...`) counting the bytes it writes to the ledger.

    LEDGER_METER=out.json python benchmarks/meter.py apply ...

Wraps the file backend's two write paths (journal appends and snapshot writes) and writes
`{"journal_bytes", "journal_writes", "snapshot_bytes", "snapshot_writes"}` to $LEDGER_METER at exit.
The wrappers only count; the CLI runs unchanged (its CPU time includes their few microseconds).
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from reconciler.ledger import file

counts = {"journal_bytes": 0, "journal_writes": 0, "snapshot_bytes": 0, "snapshot_writes": 0}
_write, _atomic_write = file.FileBackend._write, file.atomic_write


def _counted_write(self: Any, data: bytes, seq: int) -> None:
    _write(self, data, seq)
    counts["journal_bytes"] += len(data)
    counts["journal_writes"] += 1


def _counted_atomic_write(path: Path, data: bytes) -> None:
    _atomic_write(path, data)
    counts["snapshot_bytes"] += len(data)
    counts["snapshot_writes"] += 1


file.FileBackend._write = _counted_write  # type: ignore[method-assign]
file.atomic_write = _counted_atomic_write
atexit.register(lambda: Path(os.environ["LEDGER_METER"]).write_text(json.dumps(counts)))
sys.argv = ["agora-reconciler", *sys.argv[1:]]
runpy.run_module("reconciler", run_name="__main__")
