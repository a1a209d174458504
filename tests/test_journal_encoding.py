"""How the file journal writes a record (issue 15: work per API write): one synchronized write per
append, each line with its keys sorted and its entry as the snapshot writes it (so compacting the
journal does not encode an entry again), the entries encoded by the worker before the save lock,
and the snapshot still checked on every append: one replaced by another writer is refused."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import LedgerConflictError
from reconciler.ledger import FileBackend, Ledger
from reconciler.ledger import file as file_backend
from reconciler.ledger.journal import LedgerJournal

LONG = 3600.0  # a linger no test waits out: only an update or close() makes the writer write


def _entry(label: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "phone_number", "applied": {"label": label, "inbound_config": {"pipeline_id": None}}, "protect": False, **extra}


def _records(path: Path) -> list[str]:
    return path.with_name(path.name + ".journal").read_text().splitlines()[1:]


def test_a_record_is_the_line_json_would_write_with_the_entry_as_the_snapshot_writes_it(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    backend.save(backend.load(), 0)
    entry = _entry("ü line", observed={"b": [1, 2.5, None], "a": "\u2603"})
    odd = {"op": "put", "address": "agent/x", "entry": {"kind": "agent"}, "note": "kept"}  # not a plain put: written generically
    backend.append([{"op": "put", "address": "phone_number/+1", "entry": entry}, {"op": "drop", "address": "phone_number/+2"}, odd])
    lines = _records(tmp_path / "state.json")
    assert [json.loads(line) for line in lines] == [
        {"seq": 1, "op": "put", "address": "phone_number/+1", "entry": entry},
        {"seq": 2, "op": "drop", "address": "phone_number/+2"},
        {**odd, "seq": 3},
    ]
    assert [list(json.loads(line)) for line in lines] == [sorted(json.loads(line)) for line in lines], "keys sorted"
    assert f'"entry":{Ledger().entry_json("phone_number/+1", entry)},' in lines[0], "the entry as the snapshot writes it"
    assert lines[1] == json.dumps({"seq": 2, "op": "drop", "address": "phone_number/+2"}, separators=(",", ":"), sort_keys=True)
    again = FileBackend(tmp_path / "state.json").load()
    assert again.journaled == 3 and again.resources == {"phone_number/+1": entry, "agent/x": {"kind": "agent"}}


def test_the_journal_is_written_with_synchronized_writes(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    backend.save(backend.load(), 0)
    backend.append([{"op": "drop", "address": "phone_number/+1"}])
    assert backend._journal_fd is not None
    assert fcntl.fcntl(backend._journal_fd, fcntl.F_GETFL) & os.O_DSYNC, "each write is on disk when it returns"


def test_compaction_reuses_the_text_the_journal_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FileBackend(tmp_path / "state.json")
    journal = LedgerJournal(backend, backend.load(), linger_s=LONG)
    for i in range(5):
        journal.record(lambda res, i=i: res.__setitem__(f"phone_number/+{i}", _entry(str(i))))
    journal.update(lambda res: res.__setitem__("phone_number/+9", _entry("pending", pending=True)))
    journal.close()
    encoded: list[Any] = []
    real = json.dumps

    def counting(value: Any, **kwargs: Any) -> str:
        if isinstance(value, dict):
            encoded.append(value)
        return real(value, **kwargs)

    monkeypatch.setattr("reconciler.ledger.json.dumps", counting)
    journal.compact()
    monkeypatch.undo()
    assert encoded == [], "every entry was encoded once, when it was journaled"
    assert json.loads((tmp_path / "state.json").read_text())["resources"] == journal.ledger.resources
    assert (tmp_path / "state.json").read_bytes() == journal.ledger.encode(journal.ledger.serial), "the same bytes as a fresh encode"
    fresh = Ledger(journal.ledger.lineage, journal.ledger.serial, journal.ledger.salt, dict(journal.ledger.resources))
    assert fresh.encode(fresh.serial) == (tmp_path / "state.json").read_bytes()


def test_an_update_encodes_its_entries_before_it_takes_the_save_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FileBackend(tmp_path / "state.json")
    journal = LedgerJournal(backend, backend.load(), linger_s=LONG)
    journal.record(lambda res: res.__setitem__("phone_number/+1", _entry("done")))
    seen: list[tuple[str, bool]] = []
    real = journal.ledger.entry_json

    def watched(address: str, entry: dict[str, Any]) -> str:
        seen.append((address, journal._save_lock.locked()))
        return real(address, entry)

    monkeypatch.setattr(journal.ledger, "entry_json", watched)
    journal.update(lambda res: res.__setitem__("phone_number/+2", _entry("pending", pending=True)))
    first = {address: locked for address, locked in reversed(seen)}
    assert first == {"phone_number/+1": False, "phone_number/+2": False}, "encoded outside the save lock"
    assert len(_records(tmp_path / "state.json")) == 2
    journal.close()


def test_an_append_onto_a_snapshot_another_writer_replaced_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    mine = FileBackend(path)
    ledger = mine.load()
    mine.save(ledger, 0)
    mine.append([{"op": "put", "address": "phone_number/+1", "entry": _entry("mine")}])
    intruder = FileBackend(path)
    theirs = intruder.load()
    theirs.resources["phone_number/+2"] = _entry("theirs")
    intruder.save(theirs, theirs.serial)  # a new snapshot (serial 2): it also removes the journal
    with pytest.raises(LedgerConflictError, match=r"changed while this run was using it \(serial 2, expected 1\)"):
        mine.append([{"op": "put", "address": "phone_number/+3", "entry": _entry("lost")}])
    assert FileBackend(path).load().resources == {"phone_number/+1": _entry("mine"), "phone_number/+2": _entry("theirs")}


def test_a_snapshot_replaced_with_the_same_serial_by_another_writer_is_not_taken_for_ours(tmp_path: Path) -> None:
    """Only a stat per append: a file put in place by anyone (another inode) is read and checked."""
    path = tmp_path / "state.json"
    mine = FileBackend(path)
    ledger = mine.load()
    mine.save(ledger, 0)
    stranger = Ledger(serial=0)
    file_backend.atomic_write(path, stranger.encode(1))  # another lineage at serial 1
    with pytest.raises(LedgerConflictError):
        mine.append([{"op": "drop", "address": "phone_number/+1"}])
