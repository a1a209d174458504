"""The ledger during an apply: changes appended to the backend's journal in groups, compacted at the end.

Owns group commit (one `Backend.append` + fsync covers every change completed meanwhile, each
written as one small record, so the cost per change stays constant however big the ledger is),
telling callers when a change is durable (`when_durable`), the synchronous form used to journal an
agent start or a number import before its POST (`update`: several workers' records share one
write, each worker returning once a write that includes its own is on disk), retrying a failed
write once, stopping the run on a write that fails, and compaction (`compact`: one snapshot at the
end of the run, and first thing when the loaded ledger had journal records replayed after a crash).

Completed changes are written by a writer thread that gathers them for up to `linger_s` after the
first one (or sooner, with the next synchronous `update`, whose write covers everything recorded
so far): fewer writes, fewer wake-ups, and a change is still reported only once it is on disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import LedgerConflictError, LedgerError
from . import Backend, JournalRecord, Ledger


class _Tracked(dict[str, dict[str, Any]]):
    """The resources of an apply's ledger: remembers which addresses were written since asked."""

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        super().__init__(data)
        self.touched: dict[str, None] = {}

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        super().__setitem__(key, value)
        self.touched[key] = None

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.touched[key] = None

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        self.touched[key] = None
        return super().pop(key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[str, dict[str, Any]]:
        key, value = super().popitem()
        self.touched[key] = None
        return key, value

    def clear(self) -> None:
        self.touched.update(dict.fromkeys(self))
        super().clear()

    def drain(self) -> list[JournalRecord]:
        """The records of the addresses written since the last drain (each once, as it is now)."""
        records: list[JournalRecord] = []
        for address in self.touched:
            entry = self.get(address)
            records.append({"op": "drop", "address": address} if entry is None else {"op": "put", "address": address, "entry": entry})
        self.touched = {}
        return records


class LedgerJournal:
    """The in-memory ledger plus group-committed journal appends by a writer thread. Thread-safe.

    `record()` changes the ledger and returns at once; the writer appends every address changed so
    far in one durable write and then runs the `when_durable()` callbacks of every version that
    write covered, so a change is reported only once it is on disk. `update()` is the synchronous
    form (used to journal an agent start before its POST). `compact()` ends the run's journal."""

    LINGER_S = 0.05  # how long the writer gathers completed changes before it writes them

    def __init__(self, backend: Backend, ledger: Ledger, *, save_retries: int = 1, linger_s: float = LINGER_S) -> None:
        self.backend = backend
        self.ledger = ledger
        self._resources = _Tracked(ledger.resources)
        ledger.resources = self._resources
        self._mutex = threading.Lock()
        self._save_lock = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._version = 0
        self._saved = 0
        self._save_retries = save_retries
        self._callbacks: list[tuple[int, Callable[[LedgerError | None], None]]] = []
        self._closing = False
        self._linger = linger_s
        self._writer: threading.Thread | None = None
        self._writer_idle = False  # waiting for a first unsaved change: the next record wakes it
        self._settle_due = False  # a synchronous write covered changes whose callbacks the writer runs
        self._appended = False  # the backend's journal holds records of this run
        self.failed: LedgerError | None = None

    @property
    def version(self) -> int:
        with self._mutex:
            return self._version

    def record(self, mutate: Callable[[dict[str, dict[str, Any]]], None]) -> int:
        """Apply `mutate` to the resources; the writer thread saves it soon. Returns its version."""
        return self._record(mutate, wake=True)

    def _record(self, mutate: Callable[[dict[str, dict[str, Any]]], None], *, wake: bool) -> int:
        with self._mutex:
            mutate(self._resources)
            self._version += 1
            if wake:
                self._wake_writer()
            return self._version

    def _wake_writer(self) -> None:
        """Start the writer, or wake it if it waits for work (call with the mutex held). While it
        lingers over a write, nothing but close() wakes it."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="ledger-writer", daemon=True)
            self._writer.start()
        elif self._writer_idle:
            self._writer_idle = False
            self._wake.notify()

    def owned_agent_ids(self) -> set[str]:
        """The agent ids the ledger owns right now (a consistent snapshot)."""
        with self._mutex:
            return {str(e["agent_id"]) for k, e in self.ledger.resources.items() if k.startswith("agent/") and e.get("agent_id")}

    def update(self, mutate: Callable[[dict[str, dict[str, Any]]], None]) -> None:
        """Apply `mutate` and return once a write that includes it succeeded (this thread writes it,
        with every change recorded so far, unless a write already under way covers it). The
        callbacks of the other changes that write covered are left to the writer thread."""
        version = self._record(mutate, wake=False)
        self._encode_ahead()
        self.flush(version, settle=False)
        with self._mutex:
            if self._callbacks:
                self._settle_due = True
                self._wake_writer()

    def _encode_ahead(self) -> None:
        """Work out the JSON text of the entries written since the last write, outside any lock
        (`Ledger.entry_json` keeps it): the write, which holds the save lock, then only joins it."""
        with self._mutex:
            entries = [(address, self._resources.get(address)) for address in self._resources.touched]
        for address, entry in entries:
            if entry is not None:
                self.ledger.entry_json(address, entry)

    def when_durable(self, version: int, callback: Callable[[LedgerError | None], None]) -> None:
        """Call `callback(None)` once `version` is saved, or `callback(error)` if saving failed."""
        with self._mutex:
            if self._saved >= version:
                error = None  # on disk: a later failed write does not undo it
            elif self.failed is None:
                self._callbacks.append((version, callback))
                return
            else:
                error = self.failed
        callback(error)

    def close(self) -> None:
        """Write what is left, stop the writer, and settle every callback."""
        with self._mutex:
            self._closing = True
            self._wake.notify()
            writer = self._writer
        if writer is not None:
            writer.join()
        self._settle()

    def _write_loop(self) -> None:
        while True:
            with self._mutex:
                while not self._closing and self._version <= self._saved and not self._settle_due and self.failed is None:
                    self._writer_idle = True
                    self._wake.wait()
                self._writer_idle = self._settle_due = False
                if not self._closing and self._version > self._saved and self.failed is None:
                    self._wake.wait(self._linger)  # gather more into this write; close() cuts it short
                done = self._closing and (self._version <= self._saved or self.failed is not None)
            if done:
                return
            self._encode_ahead()
            try:
                self._flush(None)
            except LedgerError:
                self._settle()
                return
            self._settle()

    def _settle(self) -> None:
        with self._mutex:
            error, saved = self.failed, self._saved
            # a version on disk is done even when a later write failed; the rest share the failure
            due = [(cb, None if v <= saved else error) for v, cb in self._callbacks if v <= saved or error is not None]
            self._callbacks = [(v, cb) for v, cb in self._callbacks if not (v <= saved or error is not None)]
        for callback, outcome in due:
            callback(outcome)

    def _frozen(self) -> Ledger:
        """A copy to write a snapshot from while workers go on (call with the mutex held)."""
        self._resources.touched = {}  # all in the snapshot
        return self.ledger.snapshot()

    def flush(self, version: int | None = None, *, settle: bool = True) -> None:
        """Make everything recorded so far durable (one append; a snapshot after a replay), then
        run the callbacks it made due (`settle=False`: leave them to the caller)."""
        self._flush(version)
        if settle:
            self._settle()

    def _flush(self, version: int | None) -> None:
        with self._save_lock:
            if self.failed is not None:
                raise self.failed
            if version is not None and self._saved >= version:
                return
            with self._mutex:
                snap_version = self._version
                if snap_version == self._saved:
                    return
                compact = self.ledger.journaled > 0  # replayed after a crash: one snapshot first
                frozen = self._frozen() if compact else None
                records = [] if compact else self._resources.drain()
            if frozen is not None:
                self._write(lambda: self.backend.save(frozen, frozen.serial))
                with self._mutex:
                    self.ledger.serial, self.ledger.journaled = frozen.serial, 0
            else:
                self._write(lambda: self.backend.append(records, self.ledger.entry_json))
                self._appended = True
            with self._mutex:
                self._saved = snap_version

    def compact(self) -> None:
        """Fold this run's journal into a new snapshot (end of the run). Raises LedgerError."""
        self.close()
        self.flush()
        with self._save_lock:
            if self.failed is not None:
                raise self.failed
            if not (self._appended or self.ledger.journaled):
                return
            with self._mutex:
                frozen = self._frozen()
            self._write(lambda: self.backend.save(frozen, frozen.serial))
            with self._mutex:
                self.ledger.serial, self.ledger.journaled = frozen.serial, 0
            self._appended = False

    def _write(self, write: Callable[[], object]) -> None:
        for attempt in range(self._save_retries + 1):
            try:
                write()
                return
            except Exception as exc:  # noqa: BLE001 - any failure to save must stop the run, not only ours
                error = exc if isinstance(exc, LedgerError) else LedgerError(f"cannot write the ledger: {type(exc).__name__}: {exc}")
                if attempt >= self._save_retries or isinstance(exc, LedgerConflictError):
                    with self._mutex:
                        self.failed = error
                    raise error from None
                time.sleep(0.2)
