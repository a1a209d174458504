"""Attack on the journal's group commit (commit 9dbcca6: completed changes gathered by the writer,
a synchronous update's write carrying them and leaving their reports to the writer): a change
whose record is on disk is reported done, even when a later write fails before the writer got to
report it. A real file ledger whose second append fails (as on a full disk); the writer's linger
is long, so the order of events is fixed, not timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import LedgerError
from reconciler.ledger import EntryEncoder, FileBackend, Ledger
from reconciler.ledger.journal import LedgerJournal


class _FullAfterOneAppend(FileBackend):
    appends = 0

    def append(self, records: list[dict[str, Any]], encoded: EntryEncoder | None = None) -> None:
        self.appends += 1
        if self.appends > 1:
            raise OSError(28, "No space left on device")
        super().append(records, encoded)


def _entry(n: int) -> dict[str, Any]:
    return {"kind": "phone_number", "applied": {"label": f"l{n}"}, "protect": False, "updated_at": 1}


def test_a_change_on_disk_is_reported_done_though_a_later_write_fails(tmp_path: Path) -> None:
    backend = _FullAfterOneAppend(tmp_path / "state.json")
    ledger = Ledger()
    backend.save(ledger, 0)
    ledger = backend.load()
    journal = LedgerJournal(backend, ledger, save_retries=0, linger_s=30)
    outcomes: list[LedgerError | None] = []
    version = journal.record(lambda res: res.__setitem__("phone_number/+14155550100", _entry(0)))  # a completed change
    journal.when_durable(version, outcomes.append)
    journal.update(lambda res: res.__setitem__("phone_number/+14155550101", _entry(1)))  # an import's pending entry: written
    assert "phone_number/+14155550100" in FileBackend(tmp_path / "state.json").load().resources, "the completed change is on disk"
    with pytest.raises(LedgerError):
        journal.update(lambda res: res.__setitem__("phone_number/+14155550102", _entry(2)))  # the disk is full now
    journal.close()
    assert outcomes == [None], "reported done: its record was written before the failure"
