"""Use cases: build a plan, apply it (gates, staleness, lock), drift, export, state edits.

Everything a command does besides parsing arguments and printing: option precedence
(flag > environment > `settings:` > default), taking the ledger lock, re-planning a saved plan
and refusing it when stale, the safety gates, running the executor and turning its report into
an outcome or an error. Knows nothing about click or the terminal.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import config
from .client import Client
from .diff import DeclaredForms, applied_agent_essence, applied_phone_essence, diff
from .errors import (
    ApprovalError,
    InterruptedApply,
    LedgerError,
    PartialApplyError,
    PlanFileError,
    SelectionError,
    StalePlanError,
    UnsafePlanError,
)
from .executor import ChangeResult, ExecutionReport, Executor
from .ledger import Backend, Ledger, open_backend
from .ledger.journal import LedgerJournal
from .live import read_live
from .memory import acyclic
from .model import DEFAULT_TOKEN_TTL, Address, Desired, Kind, Live
from .observed import observed_form
from .plan import Action, Plan, address_selected, listed, staleness, unmatched_patterns
from .safety import SafetyPolicy, exposures, safety_violations
from .tokens import Minter

DEFAULT_STATE = ".agora-reconciler/state.json"
DEFAULT_PARALLELISM = 8
MAX_LISTED_FAILURES = 20


@dataclass(frozen=True)
class Options:
    endpoint: str = ""  # as given: local, us, ..., a URL, or "" for Agora's default
    state: str = DEFAULT_STATE
    state_name: str = "default"  # the ledger's name in a PostgreSQL database
    parallelism: int = DEFAULT_PARALLELISM
    prune: bool = False
    allow_replace: bool = False
    force: bool = False
    lock_timeout: float = 0.0
    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    safety: SafetyPolicy = field(default_factory=SafetyPolicy)
    command: str = "agora-reconciler"


def resolve_options(desired: Desired | None, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Options:
    """flag > environment > `settings:` > default, for every option."""
    env = os.environ if env is None else env
    s = desired.settings if desired else None

    def pick(flag: str, env_var: str | None, setting: Any, default: Any) -> Any:
        if flags.get(flag) is not None:
            return flags[flag]
        if env_var and env.get(env_var):
            return env[env_var]
        return setting if setting is not None else default

    base = Path(desired.base_dir) if desired else Path(".")
    state_flag = pick("state", "AGORA_RECONCILER_STATE", None, None)
    if state_flag is not None:
        state = str(state_flag)
    else:
        state = str(s.state) if s and s.state else DEFAULT_STATE
        if "://" not in state and not Path(state).is_absolute():
            state = str(base / state)
    return Options(
        endpoint=str(pick("endpoint", "AGORA_ENDPOINT", s.endpoint if s else None, "") or ""),
        state=state,
        state_name=str(pick("state_name", "AGORA_RECONCILER_STATE_NAME", None, None) or default_state_name(base)),
        parallelism=int(pick("parallelism", None, s.parallelism if s else None, DEFAULT_PARALLELISM)),
        prune=bool(s.prune) if s and s.prune is not None else False,
        allow_replace=bool(flags.get("allow_replace") or (s.allow_replace if s else False)),
        force=bool(flags.get("force")),
        lock_timeout=float(flags.get("lock_timeout") or 0.0),
        targets=tuple(flags.get("targets") or ()),
        excludes=tuple(flags.get("excludes") or ()),
        safety=SafetyPolicy(
            max_delete_pct=float(s.max_delete_pct) if s and s.max_delete_pct is not None else 30.0,
            min_existing=int(s.min_existing) if s and s.min_existing is not None else 10,
        ),
        command=str(flags.get("command") or "agora-reconciler"),
    )


def default_state_name(config_dir: Path) -> str:
    """A PostgreSQL ledger's default name: the configuration folder's name (`--state-name` overrides)."""
    return config_dir.resolve().name or "default"


def backend_for(options: Options) -> Backend:
    """The ledger backend; every ledger it loads is checked against `ledger.schema.json`."""
    return open_backend(options.state, options.state_name, validate=config.validate_ledger_document)


@dataclass
class Session:
    desired: Desired
    client: Client
    backend: Backend
    options: Options
    clock: Callable[[], float] = time.time  # token issue times and renewals (the loop injects one)
    declared_forms: DeclaredForms | None = None  # kept between plans of this declaration (the loop sets one)

    def minter(self) -> Minter | None:
        """Mints tokens for agents that declare none, when `settings.app_certificate` is set."""
        s = self.desired.settings
        if not s.app_certificate:
            return None
        return Minter(s.app_certificate, s.token_ttl or DEFAULT_TOKEN_TTL, clock=self.clock)

    def keep_declared_forms(self) -> None:
        """Keep what the diff works out from the declaration for the next plans (a long-running loop)."""
        self.declared_forms = DeclaredForms()

    @classmethod
    def open(cls, desired: Desired, client: Client, options: Options) -> Session:
        return cls(desired, client, backend_for(options), options)


@dataclass(frozen=True)
class Planned:
    plan: Plan
    ledger: Ledger
    live: Live
    resolved: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # pending starts found alive


def build_plan(session: Session, ledger: Ledger | None = None, *, digests: bool = True) -> Planned:
    """Read the ledger and the live account, diff, and return the (filtered) plan.

    `digests=False` leaves out the live and secrets digests: only a plan that is saved, printed
    as JSON or checked for staleness needs them (they cost a full encode and a slow hash)."""
    with acyclic():  # ledger, live answers and essences hold no reference cycles
        return _build_plan(session, ledger, digests)


def _build_plan(session: Session, ledger: Ledger | None, digests: bool) -> Planned:
    ledger = ledger if ledger is not None else session.backend.load()
    live = read_live(session.client, session.desired, ledger, parallelism=session.options.parallelism)
    result = diff(session.desired, live, ledger, prune=session.options.prune, now=session.clock(), cache=session.declared_forms)
    o = session.options
    _check_selection(session, ledger, live)
    warnings = list(result.warnings)
    replaces = [c for c in result.changes if c.kind == Kind.PHONE_NUMBER.value and c.action is Action.REPLACE]
    if replaces and not o.allow_replace:
        names = ", ".join(str(c.address) for c in replaces)
        warnings.append(f"apply will refuse to replace {names} unless allow_replace (setting) or --allow-replace is given")
    plan = Plan(
        changes=tuple(result.changes),
        unchanged=result.unchanged,
        unmanaged=tuple(result.unmanaged),
        adopted=tuple(a for a in result.adopted if address_selected(str(a), o.targets, o.excludes)),
        errors=tuple(result.errors),
        notes=(*live.notes, *result.notes),
        config_digest=session.desired.digest(),
        live_digest=live.digest() if digests else Plan.live_digest,
        ledger_serial=ledger.effective_serial,
        # keyed by the ledger's salt when there is a ledger (never in the plan file)
        secrets_digest=session.desired.secrets_digest(ledger.salt if ledger.effective_serial else session.desired.digest())
        if digests
        else "",
        endpoint=o.endpoint or "default",
    ).filtered(o.targets, o.excludes)
    unsafe = safety_violations(plan, exposures(session.desired, live, ledger, prune=o.prune), o.safety)
    warnings += [f"unsafe plan: {u}; apply needs --force" for u in unsafe]
    return Planned(replace(plan, warnings=tuple(warnings)), ledger, live, result.resolved)


def _check_selection(session: Session, ledger: Ledger, live: Live) -> None:
    """A `--target`/`--exclude` pattern that matches no resource (declared, owned or live) is a
    typo: refused, so that a drift check with a misspelt target never passes as "in sync"."""
    o = session.options
    if not o.targets and not o.excludes:
        return
    known = {str(n.address) for n in session.desired.phone_numbers} | {str(a.address) for a in session.desired.agents}
    known |= set(ledger.resources)
    known |= {f"{Kind.PHONE_NUMBER.value}/{n}" for n in live.phone_numbers}
    known |= {f"{Kind.AGENT.value}/{agent_id}" for agent_id in live.agent_ids()}
    unmatched = unmatched_patterns(o.targets, o.excludes, known)
    if unmatched:
        raise SelectionError(
            f"{', '.join(unmatched)} matches no resource (declared, owned or in the account); "
            "addresses look like phone_number/+14155550100 or agent/NAME, globs allowed"
        )


def check_gates(planned: Planned, session: Session) -> None:
    """Refuse before any write: protect violations, unallowed replaces, unsafe thresholds."""
    plan, o = planned.plan, session.options
    if plan.errors:
        raise UnsafePlanError("the plan cannot be applied:\n" + listed(plan.errors))
    replaces = [str(c.address) for c in plan.changes if c.kind == Kind.PHONE_NUMBER.value and c.action is Action.REPLACE]
    if replaces and not o.allow_replace:
        raise UnsafePlanError(
            f"replacing {len(replaces)} phone number(s) deletes and re-imports them (calls are not routed in between); "
            "pass --allow-replace or set allow_replace: true:\n" + listed(replaces)
        )
    unsafe = safety_violations(plan, exposures(session.desired, planned.live, planned.ledger, prune=o.prune), o.safety)
    if unsafe and not o.force:
        raise UnsafePlanError("refusing an unsafe plan: " + "; ".join(unsafe) + " (pass --force if this is intended)")


# --------------------------------------------------------------------------- saved plans
def load_plan_file(path: str, validate: Callable[[Any], list[str]]) -> Plan:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PlanFileError(f"cannot read the plan file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PlanFileError(f"the plan file {path} is not JSON: {exc}") from None
    problems = validate(doc)
    if problems:
        raise PlanFileError(f"the plan file {path} is not an agora-reconciler plan: {problems[0]}")
    try:
        return Plan.from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanFileError(f"the plan file {path} is damaged: {exc}") from None


# --------------------------------------------------------------------------- apply
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
            adopted = _sync_ledger(session, planned, journal)
            _compact(session, journal)
            return ApplyOutcome(plan, None, adopted)
        if saved is None and not confirm(plan):
            raise ApprovalError("apply cancelled: nothing was changed")
        stop = stop or threading.Event()
        executor = Executor(session.client, journal, parallelism=o.parallelism, stop=stop, on_result=on_result, minter=session.minter())
        report = executor.run(plan)
        outcome = ApplyOutcome(plan, report)
        if report.ledger_error is not None:
            raise _ledger_failure(session, journal, report.ledger_error, report.dumped_to)
        outcome.adopted = _sync_ledger(session, planned, journal)
        _compact(session, journal)
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


def _compact(session: Session, journal: LedgerJournal) -> None:
    """Fold the run's journal into the snapshot; if that fails, the journal still holds it all."""
    try:
        journal.compact()
    except LedgerError as exc:
        raise _ledger_failure(session, journal, exc, session.backend.dump_errored(journal.ledger)) from None


def _sync_ledger(session: Session, planned: Planned, journal: LedgerJournal) -> int:
    """Record adopted numbers, `protect` flags, finished imports and missing observed forms of
    unchanged declared numbers, and lost agent starts found alive (no API call)."""
    changed = {str(c.address) for c in planned.plan.changes}
    o = session.options
    updates: dict[str, dict[str, Any]] = {}
    adopted = 0
    for spec in session.desired.phone_numbers:
        key = str(spec.address)
        if key in changed or spec.phone_number not in planned.live.phone_numbers:
            continue
        if not address_selected(key, o.targets, o.excludes):
            continue
        entry = journal.ledger.resources.get(key)
        if entry is None or bool(entry.get("protect")) != spec.protect or entry.get("pending") or "observed" not in entry:
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
    return adopted


# --------------------------------------------------------------------------- export and state
INBOUND_EXPORT_KEYS = ("allowed_addresses", "pipeline_id")
OUTBOUND_EXPORT_KEYS = ("address", "transport", "prefix", "user", "pipeline_id")


@dataclass(frozen=True)
class Exported:
    """`export`: the document, trailing comments by value path, and what cannot be exported."""

    document: dict[str, Any]
    comments: dict[tuple[str | int, ...], str]
    variables: tuple[str, ...]  # ${VAR} placeholders the user must set
    agents: dict[str, list[dict[str, Any]]]  # app id -> running agents (start properties cannot be read)


def sip_password_variable(phone_number: str) -> str:
    return "SIP_PASSWORD_" + "".join(ch for ch in phone_number if ch.isdigit())


def _exported_number(item: Mapping[str, Any]) -> dict[str, Any]:
    raw_in, raw_out = dict(item.get("inbound_config") or {}), dict(item.get("outbound_config") or {})
    inbound = {k: raw_in[k] for k in INBOUND_EXPORT_KEYS if raw_in.get(k) not in (None, [], "")}
    outbound = {k: raw_out[k] for k in OUTBOUND_EXPORT_KEYS if raw_out.get(k) not in (None, "")}
    if "pipeline_id" not in raw_in and "pipeline_id" not in raw_out and (item.get("associated_pipeline") or {}).get("pipeline_id"):
        inbound["pipeline_id"] = item["associated_pipeline"]["pipeline_id"]
    return {
        "phone_number": item["phone_number"],
        "provider": item.get("provider"),
        "label": item.get("label", ""),
        "inbound": bool(item.get("inbound", True)),
        "outbound": bool(item.get("outbound", True)),
        "inbound_config": inbound,
        "outbound_config": outbound,
    }


def export_document(client: Client, app_ids: Sequence[str] = ()) -> Exported:
    """Live numbers as a configuration document; the running agents of `app_ids` are listed
    apart (the API does not return start properties). SIP passwords, which the API never returns,
    become `${SIP_PASSWORD_<digits>}` placeholders wherever a SIP user is set."""
    live = sorted(client.list_numbers(), key=lambda n: str(n.get("phone_number")))
    names = {
        str(p["pipeline_id"]): str(p["pipeline_name"])
        for p in (n.get("associated_pipeline") or {} for n in live)
        if p.get("pipeline_id") and p.get("pipeline_name")
    }
    numbers: list[dict[str, Any]] = []
    comments: dict[tuple[str | int, ...], str] = {}
    variables: list[str] = []
    for index, item in enumerate(live):
        entry = _exported_number(item)
        for side in ("inbound_config", "outbound_config"):
            pipeline = entry[side].get("pipeline_id")
            if pipeline in names:
                comments[("phone_numbers", index, side, "pipeline_id")] = f"pipeline: {names[pipeline]}"
        if entry["outbound_config"].get("user"):
            variable = sip_password_variable(entry["phone_number"])
            entry["outbound_config"]["password"] = "${" + variable + "}"
            comments[("phone_numbers", index, "outbound_config", "password")] = f"write-only: set {variable} (the API never returns it)"
            variables.append(variable)
        numbers.append(entry)
    agents = {app: list(client.iter_agents(app, from_time=0)) for app in app_ids}
    return Exported({"version": 1, "phone_numbers": numbers}, comments, tuple(variables), agents)


def state_entries(backend: Backend) -> list[tuple[str, dict[str, Any]]]:
    ledger = backend.load()
    return sorted(ledger.resources.items(), key=lambda kv: Address.parse(kv[0]).sort_key())


def state_forget(backend: Backend, address: str, *, lock_timeout: float = 0.0, command: str = "") -> None:
    Address.parse(address)
    with backend.lock(lock_timeout, command):
        ledger = backend.load()
        if address not in ledger.resources:
            raise LedgerError(f"{address} is not in the ledger {backend.location}")
        serial = ledger.serial
        del ledger.resources[address]
        backend.save(ledger, serial)


def state_adopt_agent(session: Session, address: str, agent_id: str) -> None:
    """Record a running agent (started elsewhere) as the instance of a declared agent."""
    parsed = Address.parse(address)
    spec = next((a for a in session.desired.agents if str(a.address) == address), None)
    if parsed.kind != Kind.AGENT.value or spec is None:
        raise LedgerError(f"{address} is not an agent declared in the configuration")
    doc = session.client.get_agent(spec.app_id, agent_id)
    with session.backend.lock(session.options.lock_timeout, session.options.command):
        ledger = session.backend.load()
        serial = ledger.serial
        ledger.resources[address] = {
            "kind": Kind.AGENT.value,
            "app_id": spec.app_id,
            "agent_id": agent_id,
            "instance_name": doc.get("name"),
            "channel": spec.channel,
            "pending": False,
            "applied": applied_agent_essence(spec, ledger.salt),
            "started_at": doc.get("start_ts"),
            "restarts": 0,
        }
        session.backend.save(ledger, serial)
