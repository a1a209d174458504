"""The reconcile loop's driver: cycles of plan + apply that keep declared agents alive (DESIGN.md section 10).

Owns one cycle (re-read the declaration when its files changed, keeping the last good one while an
edit is broken; plan; narrow the plan to what the mode applies and what backoff allows; apply with
the ledger lock held for this cycle only; with a PostgreSQL ledger only the leading replica acts, the
others stand by), feeding the backoff and the statistics, the health verdict, and running cycles
until asked to stop. The clock, the jitter source and the event sink are injected.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import config, reconcile
from ..errors import ConfigError, LedgerError, LockedError, PartialApplyError, ReconcilerError, UnsafePlanError
from ..executor import ChangeResult
from ..ledger import LeaderBackend
from ..model import Desired, Kind
from ..plan import Action, Change, Plan
from ..secrets import redact
from .backoff import Backoff, BackoffPolicy
from .narrowing import STARTS, heal_part, is_renewal
from .stats import CycleResult, Event, LoopStats

MODES = ("heal", "full")
HEALTHY_INTERVALS = 3  # /healthz fails when the last successful cycle is older than this many intervals


# --------------------------------------------------------------------------- the loop
class _Watched:
    """The declaration's files and a digest of their bytes, to re-read them only when they change."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def digest(self) -> str:
        files, _ = config.discover(self.paths or [config.DEFAULT_PATH])
        h = hashlib.sha256()
        for f in files:
            h.update(str(f).encode() + b"\0")
            try:
                h.update(Path(f).read_bytes())
            except OSError as exc:
                h.update(f"unreadable {exc.errno}".encode())
        return h.hexdigest()


class Loop:
    """Runs reconcile cycles. Thread-safe for readers of `snapshot()` and `health()`."""

    def __init__(
        self,
        paths: Sequence[str],
        desired: Desired,
        session_for: Callable[[Desired], reconcile.Session],
        *,
        interval: float = 30.0,
        mode: str = "heal",
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] | None = None,
        emit: Callable[[Event], None] = lambda event: None,
        policy: BackoffPolicy | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.watched = _Watched(paths)
        self.session_for = session_for
        self.interval = interval
        self.mode = mode
        self.clock = clock
        self.emit = emit
        self.env = env
        self.backoff = Backoff(policy or BackoffPolicy(), jitter or random.SystemRandom().random)
        self._lock = threading.Lock()
        self._stats = LoopStats(started_at=clock())
        self._digest = self.watched.digest()
        self.session = self._new_session(desired)

    # ----------------------------------------------------------------- reading the declaration
    def _new_session(self, desired: Desired) -> reconcile.Session:
        session = self.session_for(desired)
        session.clock = self.clock
        session.keep_declared_forms()  # one declaration, many plans: its essences are worked out once
        old = getattr(self, "session", None)
        if old is not None and old.backend.location == session.backend.location:
            session.backend = old.backend  # the same ledger: keep its connections (and the leadership)
        return session

    def _reload(self) -> None:
        """Re-read the files when they changed; a broken edit keeps the last good declaration."""
        digest = self.watched.digest()
        if digest == self._digest:
            if self._stats.config_error:
                self._event("error", "-", "config", "kept", f"still using the last good declaration: {self._stats.config_error}")
            return
        self._digest = digest
        result = config.check(self.watched.paths or None, self.env)
        if result.errors or result.desired is None:
            message = "; ".join(str(d) for d in result.errors) or "the declaration cannot be read"
            with self._lock:
                self._stats.config_error = redact(message)
            self._event("error", "-", "config", "kept", f"still using the last good declaration: {self._stats.config_error}")
            return
        for warning in result.warnings:
            self._event("warning", "-", "config", "warning", str(warning))
        self.session = self._new_session(result.desired)
        with self._lock:
            self._stats.config_error = ""
        self._event("info", "-", "config", "reloaded", f"{len(result.desired.files)} file(s)")

    # ----------------------------------------------------------------- one cycle
    def cycle(self, *, raise_errors: bool = False) -> CycleResult:
        """Reload, plan, narrow, apply. Never raises for our errors unless `raise_errors` (--once)."""
        self._reload()
        if not self._lead():
            result = CycleResult("standby")
            self._finish(result)
            return result
        applied = Counter[str]()
        try:
            reconcile.apply(
                self.session,
                confirm=lambda plan: True,
                on_result=lambda result: self._on_result(result, applied),
                select=self._select,
                digests=False,
            )
            result = CycleResult("success", applied=sum(applied.values()))
        except PartialApplyError as exc:
            result = CycleResult("partial", exc, sum(applied.values()))
        except LockedError as exc:
            result = CycleResult("locked", exc)
        except UnsafePlanError as exc:
            result = CycleResult("refused", exc)
        except ConfigError as exc:
            result = CycleResult("error", exc)
        except ReconcilerError as exc:
            result = CycleResult("error", exc)
        self._finish(result)
        if raise_errors and result.error is not None:
            raise result.error
        return result

    def _lead(self) -> bool:
        """Several replicas on one PostgreSQL ledger: only the leader acts, the others stand by
        until it goes away (its leadership dies with its connection)."""
        backend = self.session.backend
        if not isinstance(backend, LeaderBackend):
            return True
        try:
            leading = backend.try_lead("agora-reconciler reconcile")
            holder = None if leading else backend.leader()
        except LedgerError:
            return True  # the cycle meets the same error and reports it
        role, who = ("active", "") if leading else ("standby", holder.describe() if holder else "another replica")
        with self._lock:
            changed = self._stats.role != role
            self._stats.role, self._stats.leader = role, who
        if changed or not leading:
            reason = (
                "this replica leads: it acts in each cycle"
                if leading
                else f"another replica leads ({who}); this one acts when it goes away"
            )
            self._event("info", "-", "replica", role, reason)
        return leading

    def close(self) -> None:
        """Step down at once (on SIGTERM), so a standby replica takes over in its next cycle."""
        backend = self.session.backend
        if isinstance(backend, LeaderBackend):
            backend.resign()

    def _select(self, planned: reconcile.Planned) -> Plan:
        """Note which agents are alive or down, then keep what the mode applies and backoff allows."""
        now = self.clock()
        plan = planned.plan
        self._note_agents(planned, now)
        kept: list[Change] = []
        left: list[str] = []
        for change in plan.changes:
            part = change if self.mode == "full" else heal_part(change)
            if part is None:
                left.append(f"{change.address} {change.action.value}")
                continue
            if part.kind == Kind.AGENT.value and part.action in STARTS and self._held(part, now):
                continue
            kept.append(part)
        if left:
            shown = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
            self._event("info", "-", "plan", "left", f"{len(left)} configuration change(s) left to apply (--mode heal): {shown}")
        narrowed = replace(plan, changes=tuple(kept))
        if self.mode == "full":
            return narrowed
        # what heal never applies cannot stop it (protect, lost starts to settle by hand): reported
        for error in plan.errors:
            self._event("error", "-", "plan", "cannot-apply", error)
        return replace(narrowed, errors=())

    def _note_agents(self, planned: reconcile.Planned, now: float) -> None:
        restarting = {str(c.address) for c in planned.plan.changes if c.action is Action.RESTART}
        owned = planned.ledger.of_kind(Kind.AGENT.value)
        declared = {str(a.address) for a in self.session.desired.agents}
        self.backoff.forget_except(declared)
        live = {a.agent_id: a.status for agents in planned.live.agents.values() for a in agents}
        statuses: Counter[str] = Counter()
        for address, entry in owned.items():
            agent_id = str(entry.get("agent_id") or "")
            if address in restarting:
                self.backoff.noticed_down(address, now)
            elif address in declared and agent_id in live:
                self.backoff.running(address, now)
            probe = planned.live.probes.get(agent_id)
            statuses[live.get(agent_id) or (probe.status if probe else "PENDING" if not agent_id else "UNKNOWN")] += 1
        with self._lock:
            self._stats.agents = dict(statuses)

    def _held(self, change: Change, now: float) -> bool:
        address = str(change.address)
        wait = self.backoff.wait_left(address, now)
        if wait <= 0:
            return False
        st = self.backoff.state(address)
        looping = self.backoff.crash_looping(address)
        outcome = "crash-looping" if looping else "backoff"
        self._event(
            "warning" if looping else "info",
            address,
            change.action.value,
            outcome,
            f"failed {st.failures} time(s) in a row ({st.last_error}); next attempt in {wait:.0f}s",
        )
        return True

    def _on_result(self, result: ChangeResult, applied: Counter[str]) -> None:
        change, now = result.change, self.clock()
        address = str(change.address)
        outcome = "ok" if result.ok else "skipped" if result.skipped else "failed"
        with self._lock:
            self._stats.changes[(change.kind, change.action.value, outcome)] += 1
            if result.ok and change.action is Action.RESTART:
                self._stats.restarts += 1
            if is_renewal(change):
                self._stats.token_renewals[outcome] += 1
        if result.ok:
            applied[change.action.value] += 1
        if change.kind == Kind.AGENT.value and change.action in STARTS and not result.skipped:
            if result.ok:
                self.backoff.started(address, now)
            else:
                self.backoff.start_failed(address, now, redact(result.error or "failed"))
                if self.backoff.crash_looping(address):
                    st = self.backoff.state(address)
                    self._event(
                        "error", address, change.action.value, "crash-looping", f"failed {st.failures} times in a row: {st.last_error}"
                    )
        reason = change.reason if result.ok else (result.error or "")
        self._event("info" if result.ok else "error", address, change.action.value, outcome, reason)

    def _finish(self, result: CycleResult) -> None:
        now = self.clock()
        try:
            serial = self.session.backend.load().serial
        except ReconcilerError:
            serial = self._stats.ledger_serial
        looping = tuple(sorted(a for a in self.backoff.agents if self.backoff.crash_looping(a)))
        message = redact(str(result.error)) if result.error is not None else ""
        with self._lock:
            s = self._stats
            s.cycles[result.outcome] += 1
            s.api = self.session.client.response_counts()
            s.crash_looping = looping
            s.ledger_serial = serial
            s.last_outcome = result.outcome
            s.last_error = message if not result.succeeded else ""
            if result.succeeded:
                s.last_success = now
        level = "info" if result.outcome == "success" else "warning" if result.succeeded else "error"
        reason = f"{result.applied} change(s) applied" + (f"; {message.splitlines()[0]}" if message else "")
        self._event(level, "-", "cycle", result.outcome, reason)

    def _event(self, level: str, address: str, action: str, outcome: str, reason: str) -> None:
        self.emit(Event(self.clock(), level, address, action, outcome, redact(reason)))

    # ----------------------------------------------------------------- running
    def run(self, stop: threading.Event, *, wait: Callable[[float], bool] | None = None) -> None:
        """Cycles until `stop` is set; a cycle in progress always finishes (its changes saved).

        Between cycles it waits the interval, or less when a backed-off agent falls due."""
        wait = wait or stop.wait
        while not stop.is_set():
            self.cycle()
            if stop.is_set():
                break
            if wait(self.next_wait()):
                break

    def next_wait(self) -> float:
        due = self.backoff.next_due()
        if due is None:
            return self.interval
        return max(1.0, min(self.interval, due - self.clock()))

    # ----------------------------------------------------------------- observing
    def snapshot(self) -> LoopStats:
        with self._lock:
            return self._stats.copy()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while the last successful cycle is at most three intervals old."""
        s, now = self.snapshot(), self.clock()
        limit = HEALTHY_INTERVALS * self.interval
        detail: dict[str, Any] = {"mode": self.mode, "last_outcome": s.last_outcome or None, "crash_looping": list(s.crash_looping)}
        if s.role:
            detail["role"] = s.role
        if s.leader:
            detail["leader"] = s.leader
        if s.config_error:
            detail["config_error"] = s.config_error
        if s.last_success is None:
            if now - s.started_at <= limit:
                return True, {"status": "starting", **detail}
            reason = f"no successful cycle in the {now - s.started_at:.0f}s since the start"
        else:
            age = now - s.last_success
            detail["seconds_since_last_success"] = round(age, 1)
            if age <= limit:
                return True, {"status": "ok", **detail}
            reason = f"the last successful cycle was {age:.0f}s ago (more than {HEALTHY_INTERVALS} intervals of {self.interval:g}s)"
        if s.last_error:
            reason += f"; last error: {s.last_error.splitlines()[0]}"
        return False, {"status": "failing", "reason": reason, **detail}
