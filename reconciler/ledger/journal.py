"""The ledger during an apply: changes recorded in memory and saved in groups by a writer thread.

Owns group commit (one save covers every change completed meanwhile), telling callers when a
change is durable (`when_durable`), the synchronous form used to journal an agent start before its
POST (`update`), retrying a failed save once, and stopping the run on a save that fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import LedgerConflictError, LedgerError
from . import Backend, Ledger


class LedgerJournal:
    """The in-memory ledger plus group-committed saves by a writer thread. Thread-safe.

    `record()` changes the ledger and returns at once; the writer saves everything recorded so
    far in one write and then runs the `when_durable()` callbacks of every version that save
    covered, so a change is reported only once it is on disk. `update()` is the synchronous form
    (used to journal an agent start before its POST)."""

    def __init__(self, backend: Backend, ledger: Ledger, *, save_retries: int = 1) -> None:
        self.backend = backend
        self.ledger = ledger
        self._mutex = threading.Lock()
        self._save_lock = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._version = 0
        self._saved = 0
        self._save_retries = save_retries
        self._callbacks: list[tuple[int, Callable[[LedgerError | None], None]]] = []
        self._closing = False
        self._writer: threading.Thread | None = None
        self.failed: LedgerError | None = None

    @property
    def version(self) -> int:
        with self._mutex:
            return self._version

    def record(self, mutate: Callable[[dict[str, dict[str, Any]]], None]) -> int:
        """Apply `mutate` to the resources; the writer thread saves it soon. Returns its version."""
        with self._mutex:
            mutate(self.ledger.resources)
            self._version += 1
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="ledger-writer", daemon=True)
                self._writer.start()
            self._wake.notify()
            return self._version

    def owned_agent_ids(self) -> set[str]:
        """The agent ids the ledger owns right now (a consistent snapshot)."""
        with self._mutex:
            return {str(e["agent_id"]) for k, e in self.ledger.resources.items() if k.startswith("agent/") and e.get("agent_id")}

    def update(self, mutate: Callable[[dict[str, dict[str, Any]]], None]) -> None:
        """Apply `mutate` and return once a save that includes it succeeded."""
        self.flush(self.record(mutate))

    def when_durable(self, version: int, callback: Callable[[LedgerError | None], None]) -> None:
        """Call `callback(None)` once `version` is saved, or `callback(error)` if saving failed."""
        with self._mutex:
            if self.failed is None and self._saved < version:
                self._callbacks.append((version, callback))
                return
            error = self.failed
        callback(error)

    def close(self) -> None:
        """Save what is left, stop the writer, and settle every callback."""
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
                while not self._closing and self._version <= self._saved and self.failed is None:
                    self._wake.wait()
                done = self._closing and (self._version <= self._saved or self.failed is not None)
            if done:
                return
            try:
                self.flush()
            except LedgerError:
                self._settle()
                return
            self._settle()

    def _settle(self) -> None:
        with self._mutex:
            error = self.failed
            due = [cb for v, cb in self._callbacks if error is not None or v <= self._saved]
            self._callbacks = [(v, cb) for v, cb in self._callbacks if not (error is not None or v <= self._saved)]
        for callback in due:
            callback(error)

    def flush(self, version: int | None = None) -> None:
        with self._save_lock:
            if self.failed is not None:
                raise self.failed
            if version is not None and self._saved >= version:
                return
            with self._mutex:
                snapshot = self.ledger.snapshot()
                snap_version = self._version
                serial = self.ledger.serial
            if snap_version == self._saved:
                return
            for attempt in range(self._save_retries + 1):
                try:
                    self.backend.save(snapshot, serial)
                    break
                except Exception as exc:  # noqa: BLE001 - any failure to save must stop the run, not only ours
                    error = exc if isinstance(exc, LedgerError) else LedgerError(f"cannot write the ledger: {type(exc).__name__}: {exc}")
                    if attempt >= self._save_retries or isinstance(exc, LedgerConflictError):
                        with self._mutex:
                            self.failed = error
                        raise error from None
                    time.sleep(0.2)
            with self._mutex:
                self.ledger.serial = serial + 1
                self._saved = snap_version
        self._settle()
