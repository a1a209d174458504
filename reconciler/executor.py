"""Applies a `Plan` to the account and records every completed change in the ledger.

Owns the order of the steps of one change (replace: delete/stop before add/start; number create:
journaled as pending before `POST add`, then PATCH bindings), parallelism across changes,
recording each change through the ledger journal (`ledger.journal`, group-committed; a change is
reported only once it is saved),
journaled agent starts (the instance name is saved as pending before `POST join`, so a lost answer
is resolved by name on the next run, never duplicated), "checked" retries of creating POSTs, and
stopping cleanly when asked (Ctrl-C): no new change starts, in-flight ones finish and are saved.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .client import ALL_STATE_CODES, Client
from .diff import applied_agent_essence, applied_phone_essence
from .errors import (
    ApiError,
    ConflictError,
    LedgerError,
    NotFoundError,
    RateLimitedError,
    ReconcilerError,
    RetryBudgetExhausted,
    ServerError,
    TransportError,
)
from .ledger.journal import LedgerJournal
from .live import MARGIN_S, MAX_RUNTIME_S
from .model import AgentSpec, Kind, PhoneNumberSpec, live_phone_essence
from .plan import Action, Change, Plan
from .secrets import redact

log = logging.getLogger("reconciler.executor")
T = TypeVar("T")
_TRANSIENT = (RateLimitedError, ServerError, TransportError, RetryBudgetExhausted)


@dataclass(frozen=True)
class ChangeResult:
    change: Change
    ok: bool
    error: str | None = None
    skipped: bool = False  # not started (interrupted or the ledger could not be written)


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


def _drop(resources: dict[str, dict[str, Any]], address: str) -> None:
    resources.pop(address, None)


def _new_instance_name(name: str) -> str:
    return f"{name}-{pysecrets.token_hex(4)}"


def _now() -> int:
    return int(time.time())


class Executor:
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
    ) -> None:
        self.client = client
        self.journal = journal
        self.parallelism = max(1, parallelism)
        self.stop = stop or threading.Event()
        self.on_result = on_result or (lambda result: None)
        self.retry_attempts = retry_attempts
        self.sleep = sleep
        self._report_lock = threading.Lock()

    # ----------------------------------------------------------------- driver
    def run(self, plan: Plan) -> ExecutionReport:
        report = ExecutionReport()
        try:
            with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="apply") as pool:
                futures = [pool.submit(self._one, change, report) for change in plan.changes]
                for future in futures:
                    future.result()
        finally:
            self.journal.close()  # save what is left; every result is reported by now
        report.interrupted = self.stop.is_set() and any(r.skipped for r in report.results)
        if self.journal.failed is not None:
            report.ledger_error = self.journal.failed
            report.dumped_to = self.journal.backend.dump_errored(self.journal.ledger)
        return report

    def _one(self, change: Change, report: ExecutionReport) -> None:
        if self.stop.is_set() or self.journal.failed is not None:
            self._report(report, ChangeResult(change, False, "not started", skipped=True))
            return
        try:
            self._apply(change)
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
                self._report(report, ChangeResult(change, True))
            else:
                self.stop.set()
                self._report(report, ChangeResult(change, False, f"done, but the ledger could not be written: {error}"))

        # reported only once a save that includes this change is on disk
        self.journal.when_durable(self.journal.version, durable)

    def _report(self, report: ExecutionReport, result: ChangeResult) -> None:
        with self._report_lock:
            report.results.append(result)
            self.on_result(result)

    def _apply(self, change: Change) -> None:
        if change.kind == Kind.PHONE_NUMBER.value:
            self._apply_number(change)
        else:
            self._apply_agent(change)

    # ----------------------------------------------------------------- retries
    def _checked(self, what: str, call: Callable[[], T]) -> T:
        """Re-send a creating POST only after a transient failure, relying on the caller's
        conflict handling (409 means the first attempt happened) to never duplicate."""
        delay = 0.5
        for attempt in range(self.retry_attempts):
            try:
                return call()
            except _TRANSIENT as exc:
                if attempt + 1 >= self.retry_attempts:
                    raise
                wait = getattr(exc, "retry_after", None)
                pause = min(30.0, wait if wait is not None else delay)
                log.info("%s failed (%s); checking and retrying in %.1fs", what, exc, pause)
                self.sleep(pause)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- phone numbers
    def _apply_number(self, change: Change) -> None:
        address = str(change.address)
        number = change.key
        if change.action is Action.DELETE:
            if change.disruptive:  # "already gone": a list that lacks it is no proof, so never DELETE it
                self._delete_number(number)
            self.journal.record(lambda res: _drop(res, address))
            return
        spec: PhoneNumberSpec = change.desired
        if change.action is Action.UPDATE:
            changed = {f.path.split(".")[0] for f in change.fields}
            body = {k: v for k, v in spec.bindings().items() if k in changed}
            self.client.update_number(number, body)
        else:
            self._journal_import(spec)  # before the delete of a replace too: the entry is never lost
            if change.action is Action.REPLACE:
                self._delete_number(number)
            self._import_number(spec)
            body = {k: v for k, v in spec.bindings().items() if v["pipeline_id"] is not None}
            if body:
                self.client.update_number(number, body)
        self._record_number(spec)

    def _delete_number(self, number: str) -> None:
        try:
            self.client.delete_number(number)
        except NotFoundError:
            log.info("phone number %s was already gone", number)

    def _journal_import(self, spec: PhoneNumberSpec) -> None:
        """Save the import as pending before `POST add`: from the moment the import succeeds the
        number is owned, even if its binding PATCH fails or the process dies. The entry holds what
        the import sends (bindings come after); the final entry replaces it once they are set."""
        imported = replace(spec, inbound_pipeline_id=None, outbound_pipeline_id=None)
        pending = {
            "kind": Kind.PHONE_NUMBER.value,
            "pending": True,
            "applied": applied_phone_essence(imported, self.journal.ledger.salt),
            "protect": spec.protect,
            "updated_at": _now(),
        }
        self.journal.update(lambda res: res.__setitem__(str(spec.address), pending))

    def _import_number(self, spec: PhoneNumberSpec) -> None:
        """`POST add`; only a definite refusal (not a lost answer) drops the pending entry."""
        address = str(spec.address)

        def attempt() -> None:
            try:
                self.client.add_number(spec.import_body())
            except ConflictError:
                self._adopt_existing(spec)

        try:
            self._checked(f"import of {spec.phone_number}", attempt)
        except ApiError as exc:
            if not isinstance(exc, _TRANSIENT):  # refused: nothing of ours is in the account
                self.journal.record(lambda res: _drop(res, address))
            raise

    def _adopt_existing(self, spec: PhoneNumberSpec) -> None:
        """409 phone_number_exists: adopt it if it matches the declaration (bindings aside)."""
        live = live_phone_essence(self.client.get_number(spec.phone_number))
        declared = spec.essence()
        for essence in (live, declared):
            essence["inbound_config"].pop("pipeline_id", None)
            essence["outbound_config"].pop("pipeline_id", None)
        if live != declared:
            raise ConflictError(
                f"{spec.address} is already imported with different settings; run plan again (it will be replaced if allowed)",
                status=409,
                api_reason="phone_number_exists",
            )
        log.info("%s already existed with the declared settings: adopted", spec.address)

    def _record_number(self, spec: PhoneNumberSpec) -> None:
        entry = {
            "kind": Kind.PHONE_NUMBER.value,
            "applied": applied_phone_essence(spec, self.journal.ledger.salt),
            "protect": spec.protect,
            "updated_at": _now(),
        }
        self.journal.record(lambda res: res.__setitem__(str(spec.address), entry))

    # ----------------------------------------------------------------- agents
    def _apply_agent(self, change: Change) -> None:
        address = str(change.address)
        prior: Mapping[str, Any] = change.prior or {}
        if change.action is Action.DELETE:
            if prior.get("agent_id") and change.disruptive:  # not running: only the ledger entry goes
                self._stop(str(prior["app_id"]), str(prior["agent_id"]))
            self.journal.record(lambda res: _drop(res, address))
            return
        spec: AgentSpec = change.desired
        if change.action is Action.UPDATE:
            self.client.update_agent(spec.app_id, str(prior["agent_id"]), self._update_body(change, spec))
            entry = {**prior, "applied": applied_agent_essence(spec, self.journal.ledger.salt), "updated_at": _now()}
            self.journal.record(lambda res: res.__setitem__(address, entry))
            return
        if change.action is Action.REPLACE and prior.get("agent_id"):
            self._stop(str(prior["app_id"]), str(prior["agent_id"]))
        restarts = int(prior.get("restarts", 0)) + (1 if change.action is Action.RESTART else 0)
        resume = change.action is Action.CREATE and prior.get("instance_name") and not prior.get("agent_id")
        instance = str(prior["instance_name"]) if resume else _new_instance_name(spec.name)
        self._start(spec, instance, restarts)

    @staticmethod
    def _update_body(change: Change, spec: AgentSpec) -> dict[str, Any]:
        """Only what changed, with whole `params` objects (the API replaces them as a whole)."""
        props = spec.properties
        body: dict[str, Any] = {}
        for f in change.fields:
            parts = f.path.split(".")
            if parts[1] == "token":
                body["token"] = props["token"]
            elif parts[1] in ("llm", "mllm") and len(parts) >= 3:
                body.setdefault(parts[1], {})[parts[2]] = props.get(parts[1], {}).get(parts[2])
        return body

    def _stop(self, app_id: str, agent_id: str) -> None:
        try:
            self.client.leave(app_id, agent_id)
        except NotFoundError:
            log.info("agent %s had already stopped", agent_id)

    def _start(self, spec: AgentSpec, instance: str, restarts: int) -> None:
        address = str(spec.address)
        pending = {
            "kind": Kind.AGENT.value,
            "app_id": spec.app_id,
            "agent_id": None,
            "instance_name": instance,
            "channel": spec.channel,
            "pending": True,
            "applied": applied_agent_essence(spec, self.journal.ledger.salt),
            "started_at": None,
            "restarts": restarts,
        }
        self.journal.update(lambda res: res.__setitem__(address, pending))  # journal before the POST

        def attempt() -> tuple[str, int]:
            try:
                answer = self.client.join(spec.app_id, spec.join_body(instance))
                return str(answer["agent_id"]), int(answer.get("create_ts") or _now())
            except ConflictError:
                return self._find_instance(spec, instance)

        agent_id, started = self._checked(f"start of {instance}", attempt)
        done = {**pending, "agent_id": agent_id, "pending": False, "started_at": started}
        self.journal.record(lambda res: res.__setitem__(address, done))

    def _find_instance(self, spec: AgentSpec, instance: str) -> tuple[str, int]:
        """409 TaskConflict on our own fresh name: the earlier attempt started it. Find its id."""
        since = int(time.time()) - MAX_RUNTIME_S - MARGIN_S
        for item in self.client.iter_agents(spec.app_id, from_time=since, states=ALL_STATE_CODES, channel=spec.channel):
            doc = self.client.get_agent(spec.app_id, str(item["agent_id"]))
            if doc.get("name") == instance:
                log.info("instance %s already existed as agent %s: resumed", instance, item["agent_id"])
                return str(item["agent_id"]), int(doc.get("start_ts") or item.get("start_ts") or _now())
        raise ApiError(
            f"{spec.address}: the name {instance} is taken but no agent in channel {spec.channel} has it; run apply again",
            status=409,
            api_reason="TaskConflict",
        )
