"""Per-agent crash-loop backoff for the reconcile loop (DESIGN.md section 10).

Owns the restart-delay policy (doubling, capped, jittered, reset after a long enough run) and the
per-agent bookkeeping of failures and when the next start may be tried. Pure: the time is passed in
by the caller and the jitter source is injected, so tests assert delays without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


# --------------------------------------------------------------------------- backoff
@dataclass(frozen=True)
class BackoffPolicy:
    """Restart delays: `initial_s` doubling up to `max_s`, shortened by up to `jitter` (a fraction);
    reset once an agent has run `reset_after_s`; crash-looping (always the maximum) after
    `crash_loop_after` failures in a row."""

    initial_s: float = 10.0
    max_s: float = 300.0
    reset_after_s: float = 600.0
    crash_loop_after: int = 5
    jitter: float = 0.2

    def delay(self, failures: int, draw: float) -> float:
        """The wait after the `failures`-th failure in a row; `draw` in [0, 1) picks the jitter."""
        if failures <= 0:
            return 0.0
        base = self.max_s if failures >= self.crash_loop_after else min(self.max_s, self.initial_s * 2 ** (failures - 1))
        return base * (1.0 - self.jitter * draw)


@dataclass
class AgentBackoff:
    failures: int = 0
    next_at: float = 0.0
    last_delay: float = 0.0
    started_at: float | None = None
    down_since: float | None = None
    last_error: str = ""


class Backoff:
    """Per-agent crash-loop backoff. An agent is held (not started) until its `next_at`."""

    def __init__(self, policy: BackoffPolicy, jitter: Callable[[], float]) -> None:
        self.policy = policy
        self.jitter = jitter
        self.agents: dict[str, AgentBackoff] = {}

    def state(self, address: str) -> AgentBackoff:
        return self.agents.setdefault(address, AgentBackoff())

    def wait_left(self, address: str, now: float) -> float:
        """Seconds before this agent may be started again (0: now)."""
        st = self.agents.get(address)
        return max(0.0, st.next_at - now) if st else 0.0

    def crash_looping(self, address: str) -> bool:
        st = self.agents.get(address)
        return st is not None and st.failures >= self.policy.crash_loop_after

    def noticed_down(self, address: str, now: float) -> None:
        """The agent needs a (re)start. Dying within `reset_after_s` of its start is a failure."""
        st = self.state(address)
        if st.down_since is not None:
            return
        st.down_since = now
        if st.started_at is not None and now - st.started_at < self.policy.reset_after_s:
            self._fail(st, st.started_at, "stopped within 10 minutes of its start")

    def start_failed(self, address: str, now: float, error: str) -> None:
        st = self.state(address)
        if st.down_since is None:
            st.down_since = now
        self._fail(st, now, error)

    def started(self, address: str, now: float) -> None:
        st = self.state(address)
        st.started_at, st.down_since = now, None

    def running(self, address: str, now: float) -> None:
        """Alive this cycle: after `reset_after_s` of it, the failure count starts again at 0."""
        st = self.agents.get(address)
        if st is not None and st.failures and st.started_at is not None and now - st.started_at >= self.policy.reset_after_s:
            st.failures, st.next_at, st.last_delay, st.last_error = 0, 0.0, 0.0, ""

    def forget_except(self, addresses: set[str]) -> None:
        for address in set(self.agents) - addresses:
            del self.agents[address]

    def next_due(self) -> float | None:
        pending = [st.next_at for st in self.agents.values() if st.down_since is not None and st.next_at]
        return min(pending) if pending else None

    def _fail(self, st: AgentBackoff, attempt_at: float, error: str) -> None:
        """Delays count from the start attempt that failed (or whose agent soon stopped)."""
        st.failures += 1
        st.last_delay = self.policy.delay(st.failures, self.jitter())
        st.next_at = attempt_at + st.last_delay
        st.last_error = error
