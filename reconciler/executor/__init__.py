"""Applies a `Plan` to the account and records every completed change in the ledger.

Owns the order of the steps of one change (replace: delete/stop before add/start; number create:
journaled as pending before `POST add`, then PATCH bindings; agent start: journaled as pending
before `POST join`), parallelism across changes, recording each change through the ledger journal
(`ledger.journal`, group-committed; a change is reported only once it is saved), "checked" retries
of creating POSTs, and stopping cleanly when asked (Ctrl-C): no new change starts, in-flight ones
finish and are saved. A package split along its seams; import the names from here:

* `driver`: `Executor` (run, one change, reports), `ChangeResult`, `ExecutionReport`;
* `numbers`: the steps of a phone-number change;
* `agents`: the steps of an agent change (instance names, minted tokens, waiting for a seat);
* `steps`: what the steps share (client, journal, settings, the checked retry).
"""

from __future__ import annotations

from .agents import GONE_STATUSES, LEAVE_TIMEOUT_S
from .driver import ChangeResult, ExecutionReport, Executor

__all__ = ["GONE_STATUSES", "LEAVE_TIMEOUT_S", "ChangeResult", "ExecutionReport", "Executor"]
