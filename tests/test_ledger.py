"""The file ledger: atomic saves with a backup, serial checks, locks with holder info."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from reconciler.errors import LedgerConflictError, LedgerError, LockedError
from reconciler.ledger import FileBackend, open_backend


def test_missing_ledger_loads_empty_and_first_save_is_serial_1(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "deep" / "state.json")
    ledger = backend.load()
    assert ledger.serial == 0 and ledger.resources == {} and len(ledger.salt) == 32
    ledger.resources["phone_number/+1"] = {"kind": "phone_number"}
    assert backend.save(ledger, 0) == 1
    doc = json.loads((tmp_path / "deep" / "state.json").read_text())
    assert set(doc) == {"version", "lineage", "serial", "salt", "resources"} and doc["serial"] == 1
    assert not backend.backup_path.exists()
    backend.save(ledger, 1)
    assert json.loads(backend.backup_path.read_text())["serial"] == 1


def test_a_save_whose_serial_moved_is_refused(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    mine, theirs = backend.load(), None
    backend.save(mine, 0)
    theirs = backend.load()
    backend.save(theirs, 1)
    with pytest.raises(LedgerConflictError, match="changed while this run was using it"):
        backend.save(mine, 1)
    assert backend.load().serial == 2


def test_damaged_ledger_names_the_backup(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    ledger = backend.load()
    backend.save(ledger, 0)
    backend.save(ledger, 1)
    backend.path.write_text("{not json")
    with pytest.raises(LedgerError, match=r"state\.json\.backup"):
        backend.load()


def test_a_failed_write_keeps_the_previous_ledger(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    ledger = backend.load()
    ledger.resources["phone_number/+1"] = {"kind": "phone_number"}
    backend.save(ledger, 0)
    backend.backup_path.mkdir()  # the backup cannot be written: the save must fail before touching state.json
    ledger.resources["phone_number/+2"] = {"kind": "phone_number"}
    with pytest.raises(LedgerError, match=f"cannot write the ledger {backend.path}"):
        backend.save(ledger, 1)
    assert ledger.serial == 1
    kept = backend.load()
    assert kept.serial == 1 and set(kept.resources) == {"phone_number/+1"}


def test_lock_names_its_holder_and_waits(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "state.json")
    other = FileBackend(tmp_path / "state.json")
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with backend.lock(command="agora-reconciler apply"):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(LockedError, match=rf"locked by pid {os.getpid()} on .*\('agora-reconciler apply'\) since"), other.lock():
            pass
    finally:
        release.set()
        thread.join()
    with other.lock(timeout=1):
        assert other.holder() is not None


def test_open_backend_picks_postgresql_for_a_url_without_connecting(tmp_path: Path) -> None:
    from reconciler.ledger.postgres import PostgresBackend

    backend = open_backend("postgresql://team@db.invalid/agora", "infra")
    assert isinstance(backend, PostgresBackend) and backend.location == "postgresql://team@db.invalid/agora (ledger infra)"
    assert isinstance(open_backend(str(tmp_path / "s.json")), FileBackend)


def test_a_loop_s_backend_decodes_the_same_snapshot_bytes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `keep_decoded` (the reconcile loop), loads of unchanged bytes reuse their decoded JSON, yet
    every load is its own ledger; changed bytes (a save, an edit by hand) are decoded again."""
    from reconciler.ledger import file as ledger_file

    decoded: list[int] = []
    real_loads = json.loads

    def counting_loads(raw: bytes | str) -> object:
        decoded.append(len(raw))
        return real_loads(raw)

    path = tmp_path / "state.json"
    first = FileBackend(path).load()
    first.resources["phone_number/+14155550100"] = {"kind": "phone_number", "applied": {"label": "a"}, "protect": False}
    FileBackend(path).save(first, 0)
    monkeypatch.setattr(ledger_file.json, "loads", counting_loads)
    plain = FileBackend(path)
    plain.load(), plain.load()
    assert len(decoded) == 2, "without keep_decoded every load decodes"
    backend = FileBackend(path)
    backend.keep_decoded = True
    one = backend.load()
    one.resources["phone_number/+14155550100"]["protect"] = True  # an edit of one load's entry...
    one.resources["agent/lobby"] = {"kind": "agent"}
    two = backend.load()
    assert len(decoded) == 3, "the same bytes are decoded once"
    assert two.resources == {"phone_number/+14155550100": {"kind": "phone_number", "applied": {"label": "a"}, "protect": False}}
    assert two.resources is not one.resources, "...is not seen by the next load"
    doc = real_loads(path.read_text())
    doc["resources"]["phone_number/+14155550100"]["applied"]["label"] = "edited by hand"
    path.write_text(json.dumps(doc))
    assert backend.load().resources["phone_number/+14155550100"]["applied"] == {"label": "edited by hand"} and len(decoded) == 4


def test_the_schema_check_runs_again_only_when_the_snapshot_bytes_change(tmp_path: Path) -> None:
    """The reconcile loop loads the same ledger every cycle: bytes already checked are not checked
    again, and any change to them (a save, an edit by hand) is checked before it is used."""
    from reconciler.config import validate_ledger_document

    checked: list[int] = []

    def validate(doc: object) -> list[str]:
        checked.append(1)
        return validate_ledger_document(doc)

    path = tmp_path / "state.json"
    FileBackend(path).save(FileBackend(path).load(), 0)
    backend = FileBackend(path, validate=validate)
    ledger = backend.load()
    backend.load()
    assert len(checked) == 1
    ledger.resources["phone_number/+14155550100"] = {"kind": "phone_number", "applied": {}, "protect": False}
    backend.save(ledger, ledger.serial)
    assert backend.load().resources and len(checked) == 2
    doc = json.loads(path.read_text())
    doc["resources"]["phone_number/+14155550100"]["protect"] = "yes"  # hand-edited: no longer follows the schema
    path.write_text(json.dumps(doc))
    with pytest.raises(LedgerError, match="does not follow the ledger schema"):
        backend.load()
    assert len(checked) == 3


def test_snapshot_bytes_that_passed_the_schema_check_are_not_checked_again_by_a_later_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config.ledger_checks` remembers (in the user's cache folder) the digests of snapshot bytes
    that passed: a new backend (a later run) reading the same bytes skips the check; changed bytes
    are checked; bytes that failed are never remembered, so they are refused every time."""
    from reconciler.config import schema

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs: list[int] = []
    real = schema.validate_ledger_document
    monkeypatch.setattr(schema, "validate_ledger_document", lambda doc: runs.append(1) or real(doc))
    path = tmp_path / "state.json"
    ledger = FileBackend(path).load()
    ledger.resources["phone_number/+14155550100"] = {"kind": "phone_number", "applied": {}, "protect": False}
    FileBackend(path).save(ledger, 0)
    FileBackend(path, validate=schema.ledger_checks).load()
    FileBackend(path, validate=schema.ledger_checks).load()
    assert len(runs) == 1, "the same bytes are checked by the first run only"
    doc = json.loads(path.read_text())
    doc["resources"]["phone_number/+14155550100"]["protect"] = True
    path.write_text(json.dumps(doc))
    FileBackend(path, validate=schema.ledger_checks).load()
    assert len(runs) == 2, "changed bytes are checked"
    doc["resources"]["phone_number/+14155550100"]["protect"] = "yes"  # no longer follows the schema
    path.write_text(json.dumps(doc))
    for _ in range(2):
        with pytest.raises(LedgerError, match="does not follow the ledger schema"):
            FileBackend(path, validate=schema.ledger_checks).load()
    assert len(runs) == 4
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))  # no cache: every run checks
    doc["resources"]["phone_number/+14155550100"]["protect"] = False
    path.write_text(json.dumps(doc))
    FileBackend(path, validate=schema.ledger_checks).load()
    FileBackend(path, validate=schema.ledger_checks).load()
    assert len(runs) == 6
