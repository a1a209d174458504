"""Applies a `Plan` to the account and records every completed change in the ledger.

Owns the order of the steps of one change (replace: delete/stop before add/start; number create:
journaled as pending before `POST add`, then PATCH bindings), parallelism across changes,
recording each change through the ledger journal (`ledger.journal`, group-committed; a change is
reported only once it is saved),
journaled agent starts (the instance name is saved as pending before `POST join`, so a lost answer
is resolved by name on the next run, never duplicated), "checked" retries of creating POSTs, and
stopping cleanly when asked (Ctrl-C): no new change starts, in-flight ones finish and are saved.
Agents without a declared token get a freshly minted one (`tokens.Minter`) at every start and
token update; the ledger keeps its fingerprint and validity window, never the token.
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

from .client import Client
from .diff import MINTED, TOKEN_PATH, applied_agent_essence, applied_phone_essence
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
from .live import StartAttempt, started_by
from .model import AgentSpec, Kind, PhoneNumberSpec, agent_uid, wants_rtm
from .observed import ASSOCIATED, MUTABLE_PATHS, adoption_differences, declared_form, live_form, observed_form
from .plan import Action, Change, Plan
from .secrets import fingerprint, redact
from .tokens import MintedToken, Minter

log = logging.getLogger("reconciler.executor")
T = TypeVar("T")
_TRANSIENT = (RateLimitedError, ServerError, TransportError, RetryBudgetExhausted)
GONE_STATUSES = frozenset({"STOPPED", "FAILED", "GONE"})
LEAVE_TIMEOUT_S = 60.0  # how long a replace or restart waits for the old instance to leave


def _same_seat(prior: Mapping[str, Any], spec: AgentSpec) -> bool:
    """The new instance joins the old one's channel with the same uid (unknown counts as same)."""
    props = (prior.get("applied") or {}).get("properties") or {}
    channel = prior.get("channel") or props.get("channel")
    uid = prior.get("agent_rtc_uid") or props.get("agent_rtc_uid")
    same_channel = channel is None or str(channel) == spec.channel
    same_uid = uid is None or str(uid) == str(spec.properties.get("agent_rtc_uid"))
    return same_channel and same_uid


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
            answer = self.client.update_number(number, self._binding_body(change, spec))
        else:
            self._journal_import(spec)  # before the delete of a replace too: the entry is never lost
            if change.action is Action.REPLACE:
                self._delete_number(number)
            answer = self._import_number(spec)
            body = {k: v for k, v in spec.bindings().items() if v["pipeline_id"] is not None}
            if body:
                answer = self.client.update_number(number, body)
        self._record_number(spec, answer)

    @staticmethod
    def _binding_body(change: Change, spec: PhoneNumberSpec) -> dict[str, Any]:
        """The PATCH of an update: the changed bindings, or both when only `associated_pipeline`
        (which cannot tell them apart) shows the difference."""
        changed = {f.path.split(".")[0] for f in change.fields}
        if ASSOCIATED in changed:
            return spec.bindings()
        return {k: v for k, v in spec.bindings().items() if k in changed}

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

    def _import_number(self, spec: PhoneNumberSpec) -> dict[str, Any]:
        """`POST add`; only a definite refusal (not a lost answer) drops the pending entry."""
        address = str(spec.address)

        def attempt() -> dict[str, Any]:
            try:
                return self.client.add_number(spec.import_body())
            except ConflictError as exc:
                return self._adopt_existing(spec, exc)

        try:
            return self._checked(f"import of {spec.phone_number}", attempt)
        except ApiError as exc:
            if not isinstance(exc, _TRANSIENT):  # refused: nothing of ours is in the account
                self.journal.record(lambda res: _drop(res, address))
            raise

    def _adopt_existing(self, spec: PhoneNumberSpec, conflict: ConflictError) -> dict[str, Any]:
        """A 409 on import: if the number exists (an earlier attempt, or someone else) with the
        declared settings (bindings aside, SIP addresses compared canonically), adopt it."""
        try:
            doc = self.client.get_number(spec.phone_number)
        except NotFoundError:
            raise conflict from None  # not "already imported": locked, or a conflict we cannot resolve
        differences = [p for p in adoption_differences(declared_form(spec), live_form(doc)) if p not in MUTABLE_PATHS]
        if differences:
            raise ConflictError(
                f"{spec.address} is already imported with different {', '.join(differences)}; run plan again (it will be replaced if allowed)",
                status=409,
                api_reason="phone_number_exists",
            )
        log.info("%s already existed with the declared settings: adopted", spec.address)
        return doc

    def _record_number(self, spec: PhoneNumberSpec, answer: Mapping[str, Any] | None) -> None:
        """Record what was applied and what the API showed right after (a GET if the write's
        answer does not show the number)."""
        if not answer or answer.get("phone_number") != spec.phone_number:
            answer = self.client.get_number(spec.phone_number)
        salt = self.journal.ledger.salt
        entry = {
            "kind": Kind.PHONE_NUMBER.value,
            "applied": applied_phone_essence(spec, salt),
            "observed": observed_form(spec, answer, salt),
            "protect": spec.protect,
            "updated_at": _now(),
        }
        self.journal.record(lambda res: res.__setitem__(str(spec.address), entry))

    # ----------------------------------------------------------------- agents
    def _apply_agent(self, change: Change) -> str | None:
        address = str(change.address)
        prior: Mapping[str, Any] = change.prior or {}
        if change.action is Action.DELETE:
            if prior.get("agent_id") and change.disruptive:  # not running: only the ledger entry goes
                self._stop(str(prior["app_id"]), str(prior["agent_id"]))
            self.journal.record(lambda res: _drop(res, address))
            return None
        spec: AgentSpec = change.desired
        if change.action is Action.UPDATE:
            body = self._update_body(change, spec)
            minted = self._mint(spec) if any(f.path == TOKEN_PATH for f in change.fields) else None
            if minted is not None:
                body["token"] = minted.token
            self.client.update_agent(spec.app_id, str(prior["agent_id"]), body)
            # a renewal alone (the loop's heal mode) leaves what was applied of the configuration as it was
            token_only = minted is not None and all(f.path == TOKEN_PATH and f.after == MINTED for f in change.fields)
            applied = prior.get("applied") if token_only else applied_agent_essence(spec, self.journal.ledger.salt)
            entry = {**prior, "applied": applied, "updated_at": _now()}
            self._note_token(entry, spec, minted)
            self.journal.record(lambda res: res.__setitem__(address, entry))
            return None
        detail = None
        previous = str(prior["agent_id"]) if prior.get("agent_id") else None
        if previous and change.action in (Action.REPLACE, Action.RESTART):
            if change.action is Action.REPLACE:
                self._stop(str(prior["app_id"]), previous)
            if _same_seat(prior, spec):
                detail = self._wait_gone(str(prior["app_id"]), previous, spec)
        restarts = int(prior.get("restarts", 0)) + (1 if change.action is Action.RESTART else 0)
        if change.action is Action.CREATE and prior.get("pending") and prior.get("instance_name") and not previous:
            self._resume_start(spec, prior, restarts)
            return None
        self._start(spec, _new_instance_name(spec.name), restarts, previous)
        return detail

    def _resume_start(self, spec: AgentSpec, prior: Mapping[str, Any], restarts: int) -> None:
        """An interrupted start whose agent is not listed may still be in flight at the API and land
        later. So it is re-sent under its journaled name, app, channel and uid (the API never lets
        a name be reused: whichever of the two lands second is refused, so one agent, never an
        orphan), and only then, if the declaration moved it elsewhere, replaced by a fresh instance."""
        address = str(spec.address)
        attempt = StartAttempt.from_entry(prior)
        body = spec.join_body(attempt.instance_name)
        body["properties"] = {**body["properties"], "channel": attempt.channel}
        if attempt.agent_rtc_uid is not None:
            body["properties"]["agent_rtc_uid"] = attempt.agent_rtc_uid
        applied = prior.get("applied")

        def send() -> tuple[str, int]:
            nonlocal applied
            try:
                answer = self.client.join(attempt.app_id, body)
            except ConflictError as exc:  # the earlier request landed: it runs what it was sent with
                return self._find_started(spec, attempt, exc, resent=True)
            applied = applied_agent_essence(spec, self.journal.ledger.salt)
            return str(answer["agent_id"]), int(answer.get("create_ts") or _now())

        agent_id, started = self._checked(f"start of {attempt.instance_name}", send)
        done = {**prior, "agent_id": agent_id, "pending": False, "started_at": started, "applied": applied}
        self.journal.record(lambda res: res.__setitem__(address, done))
        if attempt.app_id != spec.app_id or not _same_seat(prior, spec):
            self._stop(attempt.app_id, agent_id)
            self._start(spec, _new_instance_name(spec.name), restarts, agent_id)

    def _wait_gone(self, app_id: str, agent_id: str, spec: AgentSpec) -> str | None:
        """Wait (bounded) until the old instance has left its channel: all uids in a channel must
        be unique, so its replacement joins with the same uid only then. Says how long it took."""
        waited, delay = 0.0, 0.1
        while True:
            try:
                status = str(self.client.get_agent(app_id, agent_id).get("status", ""))
            except NotFoundError:
                status = "GONE"
            if status in GONE_STATUSES:
                return f"waited {waited:.1f}s for agent {agent_id} to leave" if waited else None
            if waited >= self.leave_timeout_s:
                raise ConflictError(
                    f"agent {agent_id} is still {status} after {waited:.0f}s: not starting its replacement with the same uid "
                    f"{spec.properties.get('agent_rtc_uid')} in channel {spec.channel}; run apply again",
                    status=409,
                )
            self.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)

    @staticmethod
    def _update_body(change: Change, spec: AgentSpec) -> dict[str, Any]:
        """Only what changed, with whole `params` objects (the API replaces them as a whole)."""
        props = spec.properties
        body: dict[str, Any] = {}
        for f in change.fields:
            parts = f.path.split(".")
            if parts[1] == "token":
                if "token" in props:
                    body["token"] = props["token"]
            elif parts[1] in ("llm", "mllm") and len(parts) >= 3:
                body.setdefault(parts[1], {})[parts[2]] = props.get(parts[1], {}).get(parts[2])
        return body

    def _stop(self, app_id: str, agent_id: str) -> None:
        try:
            self.client.leave(app_id, agent_id)
        except NotFoundError:
            log.info("agent %s had already stopped", agent_id)

    def _start(self, spec: AgentSpec, instance: str, restarts: int, previous: str | None = None) -> None:
        address = str(spec.address)
        uid = spec.properties.get("agent_rtc_uid")
        pending = {
            "kind": Kind.AGENT.value,
            "app_id": spec.app_id,
            "agent_id": None,
            "instance_name": instance,
            "channel": spec.channel,
            "agent_rtc_uid": None if uid is None else str(uid),
            "attempted_at": _now(),
            "previous_agent_id": previous,
            "pending": True,
            "applied": applied_agent_essence(spec, self.journal.ledger.salt),
            "started_at": None,
            "restarts": restarts,
        }
        self.journal.update(lambda res: res.__setitem__(address, pending))  # journal before the POST
        attempt = StartAttempt.from_entry(pending)
        tries = 0

        minted = self._mint(spec)
        body = spec.join_body(instance)
        if minted is not None:
            body["properties"]["token"] = minted.token

        def send() -> tuple[str, int]:
            nonlocal tries
            tries += 1
            try:
                answer = self.client.join(spec.app_id, body)
                return str(answer["agent_id"]), int(answer.get("create_ts") or _now())
            except ConflictError as exc:
                return self._find_started(spec, attempt, exc, resent=tries > 1)

        agent_id, started = self._checked(f"start of {instance}", send)
        done = {**pending, "agent_id": agent_id, "pending": False, "started_at": started}
        self._note_token(done, spec, minted)
        self.journal.record(lambda res: res.__setitem__(address, done))

    def _mint(self, spec: AgentSpec) -> MintedToken | None:
        """A fresh token when the agent declares none (the certificate is set)."""
        if self.minter is None or "token" in spec.properties:
            return None
        # never registered with REDACTOR one by one (its pattern would grow with every renewal):
        # `secrets.redact` masks every AccessToken2 by its shape
        return self.minter.mint(spec.app_id, spec.channel, agent_uid(spec), rtm=wants_rtm(spec))

    def _note_token(self, entry: dict[str, Any], spec: AgentSpec, minted: MintedToken | None) -> None:
        """The ledger keeps a minted token's fingerprint and validity window, never the token."""
        if minted is not None:
            entry["token"] = {
                "fingerprint": fingerprint(self.journal.ledger.salt, minted.token),
                "issued_at": minted.issued_at,
                "expires_at": minted.expires_at,
            }
        elif "token" in spec.properties:
            entry.pop("token", None)

    def _find_started(self, spec: AgentSpec, attempt: StartAttempt, conflict: ConflictError, *, resent: bool) -> tuple[str, int]:
        """A 409 on join. Only a re-sent join can have met its own earlier attempt: then look for
        what that attempt started (by name, else the one unowned agent of the channel started
        since). Otherwise, or when nothing is found, the channel's uid is taken: an error."""
        uid = f" uid {attempt.agent_rtc_uid}" if attempt.agent_rtc_uid else " uid"
        if resent:
            found = started_by(self.client, attempt, self.journal.owned_agent_ids())
            if len(found) == 1:
                log.info("the earlier start of %s had succeeded as agent %s: resumed", attempt.instance_name, found[0].agent_id)
                return found[0].agent_id, found[0].start_ts or _now()
            if len(found) > 1:
                names = ", ".join(sorted(a.agent_id for a in found))
                raise ConflictError(
                    f"the start of {attempt.describe()} lost its answer and {len(found)} agents of that channel "
                    f"could be it ({names}); record the right one with `agora-reconciler state adopt {spec.address} --agent-id AGENT_ID`",
                    status=409,
                    api_reason=conflict.api_reason,
                )
        raise ConflictError(
            f"join refused with 409 {conflict.api_reason or 'conflict'} and no agent of ours has the name "
            f"{attempt.instance_name}: another agent in channel {attempt.channel} may hold{uid} (it must be unique in a channel)",
            status=409,
            api_reason=conflict.api_reason,
        )
