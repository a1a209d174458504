"""Building a plan: read the ledger and the live account, diff, filter by `--target`/`--exclude`
(a pattern matching nothing is refused), warn about replaces and unsafe plans; the safety gates
checked before any write; loading a saved plan file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..diff import diff
from ..errors import (
    PlanFileError,
    SelectionError,
    UnsafePlanError,
)
from ..ledger import Ledger
from ..live import read_live
from ..memory import acyclic
from ..model import Kind, Live
from ..plan import Action, Plan, address_selected, listed, unmatched_patterns
from ..safety import exposures, safety_violations
from .session import Session


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
