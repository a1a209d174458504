"""`Executor`: runs the changes of a `Plan` in parallel and reports each once it is durable.

Owns parallelism across changes (`parallelism` workers taking the changes in order), turning each
change's outcome into a `ChangeResult` (errors masked), reporting a change only once a journal
write that includes it is on disk (`LedgerJournal.when_durable`), stopping cleanly when asked
(Ctrl-C: no new change starts, in-flight ones finish and are saved) or when the ledger cannot be
written, and closing the journal.

Each import is journaled as pending only when its own turn comes (never ahead of it: a pending
entry says its POST may have been sent, so one journaled for a change that never started would
claim a number the tool never sent, after a crash); imports of several workers share a write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..client import Client
from ..errors import LedgerError, ReconcilerError
from ..ledger.journal import LedgerJournal
from ..model import Kind
from ..plan import Change, Plan
from ..secrets import redact
from ..tokens import Minter
from .agents import LEAVE_TIMEOUT_S, AgentSteps
from .numbers import NumberSteps

log = logging.getLogger("reconciler.executor")


@dataclass(frozen=True)
class ChangeResult:
    change: Change
    ok: bool
    error: str | None = None
    skipped: bool = False  # not started (interrupted or the ledger could not be written)
    detail: str | None = None  # worth reporting about how it went (a wait for an old instance)


@dataclass
class ExecutionReport:
    results: list[ChangeResult] = field(default_factory=list)
    ledger_error: LedgerError | None = None
    dumped_to: str | None = None
    interrupted: bool = False

    @property
    def failures(self) -> list[ChangeResult]:
        return [r for r in self.results if not r.ok and not r.skipped]

    @property
    def succeeded(self) -> list[ChangeResult]:
        return [r for r in self.results if r.ok]


class Executor(NumberSteps, AgentSteps):
    def __init__(
        self,
        client: Client,
        journal: LedgerJournal,
        *,
        parallelism: int = 8,
        stop: threading.Event | None = None,
        on_result: Callable[[ChangeResult], None] | None = None,
        retry_attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        leave_timeout_s: float = LEAVE_TIMEOUT_S,
        minter: Minter | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.parallelism = max(1, parallelism)
        self.stop = stop or threading.Event()
        self.on_result = on_result or (lambda result: None)
        self.retry_attempts = retry_attempts
        self.sleep = sleep
        self.leave_timeout_s = leave_timeout_s
        self.minter = minter
        self._report_lock = threading.Lock()
        self._take_lock = threading.Lock()
        self._changes: Sequence[Change] = ()
        self._next = 0  # the next change to take
        self._crashed: list[BaseException] = []

    def run(self, plan: Plan) -> ExecutionReport:
        report = ExecutionReport()
        self._changes, self._next = tuple(plan.changes), 0
        workers = [
            threading.Thread(target=self._work, args=(report,), name=f"apply_{i}", daemon=True)
            for i in range(min(self.parallelism, len(self._changes)))
        ]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            self.journal.close()  # save what is left; every result is reported by now
        if self._crashed:
            raise self._crashed[0]
        report.interrupted = self.stop.is_set() and any(r.skipped for r in report.results)
        if self.journal.failed is not None:
            report.ledger_error = self.journal.failed
            report.dumped_to = self.journal.backend.dump_errored(self.journal.ledger)
        return report

    def _work(self, report: ExecutionReport) -> None:
        try:
            while (change := self._take()) is not None:
                self._one(change, report)
        except BaseException as exc:  # noqa: BLE001 - handed to run(), which raises it
            self._crashed.append(exc)

    def _take(self) -> Change | None:
        """The next change in order (None when every change was taken)."""
        with self._take_lock:
            if self._next >= len(self._changes):
                return None
            self._next += 1
            return self._changes[self._next - 1]

    def _one(self, change: Change, report: ExecutionReport) -> None:
        if self.stop.is_set() or self.journal.failed is not None:
            self._report(report, ChangeResult(change, False, "not started", skipped=True))
            return
        try:
            detail = self._apply(change)
        except LedgerError as exc:
            self.stop.set()
            self._report(report, ChangeResult(change, False, f"the ledger could not be written: {exc}"))
            return
        except ReconcilerError as exc:
            self._report(report, ChangeResult(change, False, redact(str(exc))))
            return
        except Exception as exc:
            log.debug("unexpected error in %s", change.address, exc_info=True)
            self._report(report, ChangeResult(change, False, redact(f"internal error: {type(exc).__name__}: {exc}")))
            return

        def durable(error: LedgerError | None) -> None:
            if error is None:
                self._report(report, ChangeResult(change, True, detail=detail))
            else:
                self.stop.set()
                self._report(report, ChangeResult(change, False, f"done, but the ledger could not be written: {error}"))

        # reported only once a save that includes this change is on disk
        self.journal.when_durable(self.journal.version, durable)

    def _report(self, report: ExecutionReport, result: ChangeResult) -> None:
        with self._report_lock:
            report.results.append(result)
            self.on_result(result)

    def _apply(self, change: Change) -> str | None:
        if change.kind == Kind.PHONE_NUMBER.value:
            self._apply_number(change)
            return None
        return self._apply_agent(change)
