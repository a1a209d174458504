"""What the reconcile loop reports: its log events, its statistics and the outcome of one cycle.

Owns the records `/metrics`, `/healthz` and the log lines are made from (`Event`, `LoopStats`,
`CycleResult`); plain data, no behaviour beyond copying and classifying.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ReconcilerError


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Event:
    """One log line: what happened to which address. `reason` is already free of secrets."""

    time: float
    level: str  # info, warning, error
    address: str
    action: str
    outcome: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "address": self.address, "action": self.action, "outcome": self.outcome, "reason": self.reason}


# --------------------------------------------------------------------------- statistics
@dataclass
class LoopStats:
    """Everything /metrics and /healthz show; `Loop.snapshot()` hands out copies."""

    started_at: float = 0.0
    cycles: Counter[str] = field(default_factory=Counter)  # outcome -> count
    changes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (kind, action, outcome) -> count
    api: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, status) -> count
    agents: dict[str, int] = field(default_factory=dict)  # managed agents by status
    restarts: int = 0
    token_renewals: Counter[str] = field(default_factory=Counter)  # outcome -> count
    crash_looping: tuple[str, ...] = ()
    last_success: float | None = None
    last_outcome: str = ""
    last_error: str = ""
    config_error: str = ""
    ledger_serial: int = 0
    role: str = ""  # with a PostgreSQL ledger: active (this replica leads and acts) or standby
    leader: str = ""  # on standby: who leads

    def copy(self) -> LoopStats:
        return replace(
            self,
            cycles=Counter(self.cycles),
            changes=Counter(self.changes),
            api=dict(self.api),
            agents=dict(self.agents),
            token_renewals=Counter(self.token_renewals),
        )


@dataclass(frozen=True)
class CycleResult:
    outcome: str  # success, partial (some changes failed), standby (another replica leads), locked, refused, error
    error: ReconcilerError | None = None
    applied: int = 0

    @property
    def succeeded(self) -> bool:
        """The cycle read, planned and applied what it could (failed agents are backed off)."""
        return self.outcome in ("success", "partial", "standby")
