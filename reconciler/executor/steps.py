"""What every step of a change shares: the client, the ledger journal, the settings of a run, and
the "checked" retry of creating POSTs (re-sent only after a transient failure, relying on the
caller's conflict handling: a 409 means the first attempt happened, so nothing is duplicated).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..client import Client
from ..errors import RateLimitedError, RetryBudgetExhausted, ServerError, TransportError
from ..ledger.journal import LedgerJournal
from ..tokens import Minter

log = logging.getLogger("reconciler.executor")
T = TypeVar("T")
TRANSIENT = (RateLimitedError, ServerError, TransportError, RetryBudgetExhausted)


def drop(resources: dict[str, dict[str, Any]], address: str) -> None:
    resources.pop(address, None)


def now() -> int:
    return int(time.time())


class Steps:
    """The state the steps of numbers and agents work with (set by `Executor.__init__`)."""

    client: Client
    journal: LedgerJournal
    stop: threading.Event
    retry_attempts: int
    sleep: Callable[[float], None]
    leave_timeout_s: float
    minter: Minter | None

    def _checked(self, what: str, call: Callable[[], T]) -> T:
        """Re-send a creating POST only after a transient failure, relying on the caller's
        conflict handling (409 means the first attempt happened) to never duplicate."""
        delay = 0.5
        for attempt in range(self.retry_attempts):
            try:
                return call()
            except TRANSIENT as exc:
                if attempt + 1 >= self.retry_attempts:
                    raise
                wait = getattr(exc, "retry_after", None)
                pause = min(30.0, wait if wait is not None else delay)
                log.info("%s failed (%s); checking and retrying in %.1fs", what, exc, pause)
                self.sleep(pause)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")
