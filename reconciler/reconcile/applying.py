"""Applying a plan: take the ledger lock, re-plan, refuse a stale saved plan, check the gates,
confirm, run the executor, record what was adopted or settled without an API call, compact the
journal, and turn the report into an outcome or an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..diff import applied_phone_essence, upgraded_phone_entry
from ..errors import (
    ApprovalError,
    InterruptedApply,
    LedgerError,
    PartialApplyError,
    StalePlanError,
)
from ..executor import ChangeResult, ExecutionReport, Executor
from ..ledger.journal import LedgerJournal
from ..model import Kind
from ..observed import observed_form
from ..plan import Plan, address_selected, staleness
from .planning import Planned, build_plan, check_gates
from .session import Session

MAX_LISTED_FAILURES = 20


@dataclass
class ApplyOutcome:
    plan: Plan
    report: ExecutionReport | None = None
    adopted: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for result in self.report.succeeded if self.report else []:
            out[result.change.action.value] = out.get(result.change.action.value, 0) + 1
        return out


def apply(
    session: Session,
    *,
    saved: Plan | None = None,
    confirm: Callable[[Plan], bool] = lambda plan: False,
    on_plan: Callable[[Plan], None] = lambda plan: None,
    on_result: Callable[[ChangeResult], None] = lambda result: None,
    stop: threading.Event | None = None,
    digests: bool = True,
    select: Callable[[Planned], Plan] | None = None,
) -> ApplyOutcome:
    """Lock, re-plan, check, confirm, execute, record. Raises on refusal or partial failure.
    `digests=False`: the plan is only shown as text (a saved plan is always checked with them).
    `select` narrows the fresh plan before the gates (the reconcile loop's heal mode and backoff)."""
    o = session.options
    with session.backend.lock(o.lock_timeout, o.command):
        planned = build_plan(session, digests=digests or saved is not None)
        if select is not None:
            planned = replace(planned, plan=select(planned))
        plan = planned.plan
        if saved is not None:
            stale = staleness(saved, plan)
            if stale is not None:
                raise StalePlanError(stale.message())
        on_plan(plan)
        check_gates(planned, session)
        journal = LedgerJournal(session.backend, planned.ledger)
        if not plan.has_changes:
            adopted, scrubbed = _sync_ledger(session, planned, journal)
            _compact(session, journal, scrubbed=scrubbed)
            return ApplyOutcome(plan, None, adopted)
        if saved is None and not confirm(plan):
            raise ApprovalError("apply cancelled: nothing was changed")
        stop = stop or threading.Event()
        executor = Executor(session.client, journal, parallelism=o.parallelism, stop=stop, on_result=on_result, minter=session.minter())
        report = executor.run(plan)
        outcome = ApplyOutcome(plan, report)
        if report.ledger_error is not None:
            raise _ledger_failure(session, journal, report.ledger_error, report.dumped_to)
        outcome.adopted, scrubbed = _sync_ledger(session, planned, journal)
        _compact(session, journal, scrubbed=scrubbed)
        if report.failures:
            lines = [f"{r.change.address}: {r.error}" for r in report.failures[:MAX_LISTED_FAILURES]]
            if len(report.failures) > MAX_LISTED_FAILURES:
                lines.append(f"... and {len(report.failures) - MAX_LISTED_FAILURES} more failed change(s)")
            raise PartialApplyError(
                "Apply finished with errors:\n" + "\n".join(f"  - {line}" for line in lines),
                [(str(r.change.address), r.error or "") for r in report.failures],
            )
        if report.interrupted:
            left = sum(1 for r in report.results if r.skipped)
            raise InterruptedApply(
                f"interrupted: {len(report.succeeded)} change(s) applied and saved, {left} not started; run apply again to finish"
            )
        return outcome


def _ledger_failure(session: Session, journal: LedgerJournal, cause: LedgerError, dumped_to: str | None) -> LedgerError:
    if dumped_to:
        return LedgerError(f"{cause}; what was done is saved in {dumped_to}")
    error = LedgerError(f"{cause}; what was done could not be saved anywhere else: it follows on stderr")
    error.dump = journal.ledger.encode(journal.ledger.serial).decode()
    return error


def _compact(session: Session, journal: LedgerJournal, *, scrubbed: bool = False) -> None:
    """Fold the run's journal into the snapshot; if that fails, the journal still holds it all.
    `scrubbed`: entries of an earlier layout that held a secret in clear were rewritten, so the
    snapshot is saved once more and the backup kept beside it (the previous version) is clean too."""
    try:
        journal.compact()
        if scrubbed:
            session.backend.save(journal.ledger, journal.ledger.serial)
    except LedgerError as exc:
        raise _ledger_failure(session, journal, exc, session.backend.dump_errored(journal.ledger)) from None


def _sync_ledger(session: Session, planned: Planned, journal: LedgerJournal) -> tuple[int, bool]:
    """Record adopted numbers, `protect` flags, finished imports, missing observed forms and entries
    in an earlier layout (`upgraded_phone_entry`) of unchanged declared numbers, and lost agent
    starts found alive (no API call). Returns how many were adopted, and whether an entry of an
    earlier layout (a secret in clear) was rewritten."""
    # looked up only for numbers in the account and lost starts found alive (none when all are created)
    changed = {str(c.address) for c in planned.plan.changes} if planned.live.phone_numbers or planned.resolved else set()
    o = session.options
    updates: dict[str, dict[str, Any]] = {}
    adopted = 0
    scrubbed = False
    for spec in session.desired.phone_numbers:
        if spec.phone_number not in planned.live.phone_numbers:  # first: an account's worth of creates skips the rest
            continue
        key = str(spec.address)
        if key in changed:
            continue
        if not address_selected(key, o.targets, o.excludes):
            continue
        entry = journal.ledger.resources.get(key)
        upgraded = upgraded_phone_entry(spec, entry, journal.ledger.salt) if entry is not None and spec.secrets else None
        if upgraded is not None:  # a layout from before: rewritten so no secret stays in clear
            entry, scrubbed = upgraded, True
        if (
            upgraded is not None
            or entry is None
            or bool(entry.get("protect")) != spec.protect
            or entry.get("pending")
            or "observed" not in entry
        ):
            adopted += entry is None
            salt = journal.ledger.salt
            # a pending import whose number now matches the declaration is finished
            settled = entry is not None and not entry.get("pending")
            applied = entry["applied"] if entry is not None and settled else applied_phone_essence(spec, salt)
            # unchanged, so what the API shows now is what it showed after the last write
            observed = observed_form(spec, planned.live.phone_numbers[spec.phone_number], salt)
            updates[key] = {
                "kind": Kind.PHONE_NUMBER.value,
                "applied": applied,
                "observed": entry.get("observed", observed) if entry is not None and settled else observed,
                "protect": spec.protect,
                "updated_at": int(time.time()),
            }
    for key, found in planned.resolved.items():
        if key not in changed and address_selected(key, o.targets, o.excludes):
            updates[key] = dict(found)  # a lost start found alive and unchanged: now owned by id
            adopted += 1
    if updates:
        journal.update(lambda res: res.update(updates))
    return adopted, scrubbed
