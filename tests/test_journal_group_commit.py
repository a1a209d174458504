"""Group commit in the apply journal (issue 15): completed changes wait for a shared write, a
synchronous `update` (a pending import or start) writes everything recorded so far in one append,
and the callbacks that write made due run on the writer thread, not in the updating worker."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from reconciler.errors import LedgerError
from reconciler.ledger import FileBackend
from reconciler.ledger.journal import LedgerJournal

LONG = 3600.0  # a linger no test waits out: only an update or close() makes the writer write


def _entry(label: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "phone_number", "applied": {"label": label}, "protect": False, **extra}


def _journal_lines(path: Path) -> list[str]:
    return path.with_name(path.name + ".journal").read_text().splitlines()


def test_an_update_writes_the_completed_changes_with_it_and_the_writer_reports_them(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    journal = LedgerJournal(backend, backend.load(), linger_s=LONG)
    versions = [journal.record(lambda res, i=i: res.__setitem__(f"phone_number/+{i}", _entry(str(i)))) for i in range(5)]
    reported: list[tuple[str, LedgerError | None]] = []
    done = threading.Event()

    def durable(error: LedgerError | None) -> None:
        reported.append((threading.current_thread().name, error))
        done.set()

    journal.when_durable(versions[-1], durable)
    assert reported == [] and not (tmp_path / "state.json.journal").exists(), "completed changes wait for a shared write"
    worker = threading.Thread(
        target=journal.update, args=(lambda res: res.__setitem__("phone_number/+9", _entry("pending", pending=True)),), name="worker"
    )
    worker.start()
    worker.join()
    lines = _journal_lines(tmp_path / "state.json")
    assert len(lines) == 1 + 6, "one header, then the five completed changes and the pending one: one append"
    assert FileBackend(tmp_path / "state.json").load().resources["phone_number/+4"]["applied"]["label"] == "4"
    journal.close()
    assert done.is_set() and reported == [(reported[0][0], None)]
    assert reported[0][0] != "worker", "the worker that wrote them goes on to its POST: reporting is left to others"
    assert len(_journal_lines(tmp_path / "state.json")) == 7, "nothing left to write at close"


def test_close_writes_what_the_writer_was_still_gathering(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    journal = LedgerJournal(backend, backend.load(), linger_s=LONG)
    seen: list[LedgerError | None] = []
    journal.when_durable(journal.record(lambda res: res.__setitem__("phone_number/+1", _entry("done"))), seen.append)
    journal.close()
    assert seen == [None]
    assert FileBackend(tmp_path / "state.json").load().resources == {"phone_number/+1": _entry("done")}
