"""The reconcile loop: cycles of plan + apply that keep declared agents alive (DESIGN.md section 10).

A package split along its seams; this module only re-exports its public names, so
`reconciler.loop` is imported as before:

* `backoff`: per-agent crash-loop backoff (pure; the time is passed in, the jitter injected);
* `stats`: the log events, the loop's statistics and one cycle's outcome (plain records);
* `narrowing`: what `--mode heal` applies of a plan;
* `driver`: the `Loop` (one cycle, replica leadership, the health verdict, running until stopped).

Knows nothing of HTTP serving (`observe.py`) or of the terminal (`cli`).
"""

from __future__ import annotations

from .backoff import AgentBackoff, Backoff, BackoffPolicy
from .driver import HEALTHY_INTERVALS, MODES, Loop
from .narrowing import STARTS, heal_part, is_renewal
from .stats import CycleResult, Event, LoopStats

__all__ = [
    "HEALTHY_INTERVALS",
    "MODES",
    "STARTS",
    "AgentBackoff",
    "Backoff",
    "BackoffPolicy",
    "CycleResult",
    "Event",
    "Loop",
    "LoopStats",
    "heal_part",
    "is_renewal",
]
