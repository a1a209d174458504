"""Desired x Live x Ledger -> the changes of a plan, each with its reason and field diffs.

Owns the decisions of DESIGN.md section 3: what is created, updated in place, replaced,
deleted, restarted, adopted or left alone, and why. Resources are compared on their "essence"
(defaults filled in, server-owned fields removed; secrets as salted fingerprints); only essences
that differ are deep-diffed, with `deepdiff`, and the result is turned into `FieldChange`s with
sensitive values masked right here. The only module that imports `deepdiff`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .ledger import Ledger
from .live import StartAttempt
from .model import (
    AGENT_UPDATABLE_PREFIXES,
    LIVE_STATUSES,
    Address,
    AgentSpec,
    Desired,
    Kind,
    Live,
    PhoneNumberSpec,
    Settings,
    child_path,
    is_secret_path,
    join_path,
    mask_secrets,
    mints_token,
    secret_display,
)
from .observed import (
    ASSOCIATED,
    MUTABLE_PATHS,
    adoption_differences,
    declared_form,
    drifted,
    fingerprinted,
    flat_form,
    live_form,
    phone_secrets,
    readable,
)
from .plan import DRIFT, Action, Change, FieldChange, Unmanaged
from .secrets import SENSITIVE, fingerprint
from .tokens import renew_at

MINTED = "(minted)"
TOKEN_PATH = "properties.token"

_MISSING = object()
_SCALARS = frozenset({str, int, float, bool, type(None)})


@dataclass
class DiffResult:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    unmanaged: list[Unmanaged] = field(default_factory=list)
    adopted: list[Address] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resolved: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # pending starts found alive: address -> entry


# --------------------------------------------------------------------------- essences
def fingerprint_secrets(value: Any, secrets: Mapping[str, str], salt: str, path: str = "") -> Any:
    """Replace every secret subtree by its salted fingerprint (what the ledger may hold)."""
    if path and is_secret_path(path, secrets):
        return fingerprint(salt, value)
    kind = type(value)
    if kind in _SCALARS:  # most values: no ABC checks
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k: fingerprint_secrets(v, secrets, salt, child_path(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [fingerprint_secrets(v, secrets, salt, child_path(path, i)) for i, v in enumerate(value)]
    return value


def applied_agent_essence(spec: AgentSpec, salt: str) -> dict[str, Any]:
    result: dict[str, Any] = fingerprint_secrets(spec.essence(), spec.secrets, salt)
    return result


def applied_phone_essence(spec: PhoneNumberSpec, salt: str) -> dict[str, Any]:
    """Readable essence plus write-only values, secrets fingerprinted (for the ledger)."""
    result: dict[str, Any] = fingerprint_secrets(spec.essence(), phone_secrets(spec), salt)
    result["write_only"] = {path: fingerprint(salt, value) for path, value in sorted(spec.write_only().items())}
    return result


# --------------------------------------------------------------------------- field diffs
def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return _MISSING
        elif not isinstance(doc, Mapping) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _field_path(parts: list[str | int], secrets: Mapping[str, str]) -> tuple[str | int, ...]:
    """Where a difference is reported: at the first secret path on the way down (list indices
    kept, so a secret inside a list element is reported alone, as a secret), else at the first
    list (lists are compared whole)."""
    for i in range(1, len(parts) + 1):
        if is_secret_path(join_path(parts[:i]), secrets):
            return tuple(parts[:i])
    for i, part in enumerate(parts):
        if isinstance(part, int):
            return tuple(parts[:i])
    return tuple(parts)


def _shown(value: Any, path: str, secrets: Mapping[str, str]) -> Any:
    if value is _MISSING:
        return None
    return mask_secrets(value, secrets, path)


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[FieldChange, ...]:
    """The differing fields of two essences (lists compared whole), secrets masked."""
    if before == after:
        return ()
    from deepdiff import DeepDiff  # imported on first use: in-sync plans never pay for it

    paths: set[tuple[str | int, ...]] = set()
    for items in DeepDiff(before, after, verbose_level=2).tree.values():
        for item in items:
            raw: list[str | int] = [p if isinstance(p, int) else str(p) for p in item.path(output_format="list")]
            paths.add(_field_path(raw, secrets))
    paths = {p for p in paths if not any(p[: len(q)] == q and p != q for q in paths)}
    out = []
    for parts in sorted(paths, key=lambda p: [(isinstance(x, int), x) for x in p]):
        dotted = join_path(parts)
        b, a = _get(before, parts), _get(after, parts)
        if is_secret_path(dotted, secrets):
            shown_after = secret_display(dotted, secrets) if a is not _MISSING else None
            out.append(FieldChange(dotted, SENSITIVE if b is not _MISSING else None, shown_after, sensitive=True, changed=True))
        else:
            out.append(FieldChange(dotted, _shown(b, dotted, secrets), _shown(a, dotted, secrets)))
    return tuple(out)


def created_fields(essence: Mapping[str, Any], secrets: Mapping[str, str], prefix: str = "") -> list[FieldChange]:
    out: list[FieldChange] = []
    for key in sorted(essence):
        value = essence[key]
        path = f"{prefix}.{key}" if prefix else key
        if value is None or key == "write_only":
            continue
        if is_secret_path(path, secrets):
            out.append(FieldChange(path, None, secret_display(path, secrets), sensitive=True, changed=True))
        elif isinstance(value, Mapping) and value:
            out.extend(created_fields(value, secrets, path))
        else:
            out.append(FieldChange(path, None, mask_secrets(value, secrets, path)))
    return out


# --------------------------------------------------------------------------- phone numbers
def _diff_number(
    spec: PhoneNumberSpec, live: Mapping[str, Any] | None, entry: Mapping[str, Any] | None, salt: str, out: DiffResult
) -> None:
    secrets = phone_secrets(spec)
    if live is None:
        reason = "owned but missing from the account (deleted outside the tool): import it again" if entry else "not imported yet"
        if entry is not None and entry.get("pending"):
            reason = "its import was interrupted before the answer arrived: apply imports it (a conflict means it happened)"
        fields = tuple(created_fields(spec.essence(), secrets))
        out.changes.append(Change(spec.address, Action.CREATE, reason, False, fields, spec.location, spec))
        return
    if entry is None:
        out.adopted.append(spec.address)
        fields = _adoption_fields(spec, live, secrets)
        origin = "adopted (in the account, not yet owned; compared on the fields the API shows): "
    else:
        fields = _owned_number_fields(spec, live, entry, salt, secrets)
        origin = "changed outside the tool (drift): " if all(f.origin == DRIFT for f in fields) else ""
    if not fields:
        out.unchanged += 1
        return
    immutable = [f.path for f in fields if f.path not in MUTABLE_PATHS]
    if immutable:
        reason = f"{origin}{', '.join(immutable)} cannot be changed in place: delete and import again (calls are not routed meanwhile)"
        out.changes.append(Change(spec.address, Action.REPLACE, reason, True, fields, spec.location, spec, entry))
        _check_replace_protected(spec, entry, immutable, out)
    else:
        reason = f"{origin}pipeline binding {', '.join(f.path for f in fields)} differs: update in place"
        if entry is not None and entry.get("pending"):
            reason = f"imported, but its pipeline binding {', '.join(f.path for f in fields)} was never set: update in place"
        out.changes.append(Change(spec.address, Action.UPDATE, reason, False, fields, spec.location, spec, entry))


def _check_replace_protected(spec: PhoneNumberSpec, entry: Mapping[str, Any] | None, immutable: list[str], out: DiffResult) -> None:
    """`protect` is read from the declaration and from the ledger: switching it off takes an apply."""
    changed = ", ".join(immutable)
    if spec.protect:
        out.errors.append(f"{spec.address} is protected (protect: true) but the plan replaces it ({changed} changed)")
    elif entry is not None and entry.get("protect"):
        out.errors.append(
            f"{spec.address} is protected (protect: true when last applied) but the plan replaces it ({changed} changed); "
            "apply protect: false on its own first, then the change"
        )


def _owned_number_fields(
    spec: PhoneNumberSpec, live: Mapping[str, Any], entry: Mapping[str, Any], salt: str, secrets: Mapping[str, str]
) -> tuple[FieldChange, ...]:
    """Declaration vs what we last applied, plus drift: the API now vs what it showed after our last write."""
    applied = dict(entry.get("applied") or {})
    masks = {**secrets, **{f"write_only.{p}": SENSITIVE for p in spec.write_only()}, "write_only": SENSITIVE}
    declared = list(field_changes(applied, applied_phone_essence(spec, salt), masks))
    changed = {f.path for f in declared}
    observed = entry.get("observed")
    assumed = not isinstance(observed, Mapping)
    if not isinstance(observed, Mapping):  # a ledger written before observed forms were recorded
        observed = observed_legacy(applied)
    if changed & set(MUTABLE_PATHS):
        changed.add(ASSOCIATED)
    shown_now = readable(live_form(live), declared_form(spec))
    now = fingerprinted(shown_now, secrets, salt)
    drift = []
    for path in drifted(observed, now, assumed=assumed):
        if path in changed:
            continue
        if is_secret_path(path, secrets):
            drift.append(FieldChange(path, SENSITIVE, secret_display(path, secrets), sensitive=True, changed=True, origin=DRIFT))
        else:
            drift.append(FieldChange(path, _shown(shown_now[path], path, secrets), _shown(observed[path], path, secrets), origin=DRIFT))
    return tuple(sorted(declared + drift, key=lambda f: f.path))


def observed_legacy(applied: Mapping[str, Any]) -> dict[str, Any]:
    """The observed form assumed for an entry that has none: what was applied (readable part)."""
    form = {p: v for p, v in flat_form(applied).items() if not p.startswith("write_only.")}
    form[ASSOCIATED] = form.get("inbound_config.pipeline_id") or form.get("outbound_config.pipeline_id")
    return form


def _adoption_fields(spec: PhoneNumberSpec, live: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[FieldChange, ...]:
    declared = declared_form(spec)
    shown = readable(live_form(live), declared)
    out = []
    for path in adoption_differences(declared, live_form(live)):
        if is_secret_path(path, secrets):
            out.append(FieldChange(path, SENSITIVE, secret_display(path, secrets), sensitive=True, changed=True))
        else:
            out.append(FieldChange(path, _shown(shown[path], path, secrets), _shown(declared[path], path, secrets)))
    return tuple(out)


def _diff_numbers(desired: Desired, live: Live, ledger: Ledger, prune: bool, out: DiffResult) -> None:
    declared = {n.phone_number: n for n in desired.phone_numbers}
    owned = ledger.of_kind(Kind.PHONE_NUMBER.value)
    for spec in desired.phone_numbers:
        _diff_number(spec, live.phone_numbers.get(spec.phone_number), owned.get(str(spec.address)), ledger.salt, out)
    for number in sorted(set(live.phone_numbers) | {k.split("/", 1)[1] for k in owned}):
        if number in declared:
            continue
        address = Address(Kind.PHONE_NUMBER.value, number)
        entry = owned.get(str(address))
        in_account = number in live.phone_numbers
        if entry is not None:
            reason = (
                "owned and no longer declared"
                if in_account
                else "no longer declared and already gone from the account: only the ledger entry is dropped"
            )
            out.changes.append(Change(address, Action.DELETE, reason, in_account, (), None, None, entry))
            if entry.get("protect"):
                out.errors.append(
                    f"{address} is protected (protect: true when last applied) but is no longer declared; declare it again, or set protect: false and apply before removing it"
                )
        elif prune:
            out.changes.append(Change(address, Action.DELETE, "not declared and prune: true", True, (), None, None, None))
        else:
            out.unmanaged.append(Unmanaged(Kind.PHONE_NUMBER.value, number))


# --------------------------------------------------------------------------- agents
def _agent_state(entry: Mapping[str, Any], live: Live, live_ids: set[str]) -> str | None:
    """None when the owned agent is alive; else what became of it, for the reason line."""
    agent_id = entry.get("agent_id")
    if agent_id in live_ids:
        return None
    probe = live.probes.get(str(agent_id))
    if probe is None:
        return "missing from the live agents list"
    if probe.status == "GONE":
        return f"gone (agent {agent_id} is unknown to the API)"
    if probe.status in LIVE_STATUSES:
        return None
    detail = f": {probe.message}" if probe.message else ""
    return f"{probe.status} (agent {agent_id}{detail})"


def _idle_note(address: str, entry: Mapping[str, Any], live: Live, out: DiffResult) -> None:
    agent_id = str(entry.get("agent_id"))
    statuses = {a.status for a in live.agents.get(str(entry.get("app_id")), ()) if a.agent_id == agent_id}
    probe = live.probes.get(agent_id)
    if "IDLE" in statuses or (probe is not None and probe.status == "IDLE"):
        out.notes.append(f"{address} (agent {agent_id}) is IDLE (no user in its channel): it counts as alive and is not restarted")


def _resolve_pending(address: str, entry: Mapping[str, Any], live: Live, out: DiffResult) -> Mapping[str, Any] | None:
    """A start whose answer was lost, resolved against what it was started with (never against
    the current declaration). Returns the entry completed with the agent it started, the entry as
    it is when nothing it started is alive, or None when several agents could be it (refused)."""
    found = live.pending.get(address, ())
    if len(found) == 1:
        agent = found[0]
        resolved = {**entry, "agent_id": agent.agent_id, "pending": False, "started_at": agent.start_ts}
        out.resolved[address] = resolved
        out.adopted.append(Address.parse(address))
        return resolved
    if len(found) > 1:
        attempt = StartAttempt.from_entry(entry)
        names = ", ".join(sorted(a.agent_id for a in found))
        out.errors.append(
            f"{address}: the start of {attempt.describe()} lost its answer, and {len(found)} agents started in that channel since "
            f"could be it ({names}); the API does not show agent names, so none is taken: "
            f"record the right one with `agora-reconciler state adopt {address} --agent-id AGENT_ID`, or stop the others"
        )
        return None
    return entry


def _diff_agent(
    spec: AgentSpec,
    entry: Mapping[str, Any] | None,
    live: Live,
    live_ids: set[str],
    salt: str,
    out: DiffResult,
    settings: Settings = Settings(),
    now: float = 0.0,
) -> None:
    after = applied_agent_essence(spec, salt)
    created = tuple(created_fields(spec.essence(), spec.secrets))
    if entry is None:
        out.changes.append(Change(spec.address, Action.CREATE, "not started yet", False, created, spec.location, spec))
        return
    if not entry.get("agent_id"):
        attempt = StartAttempt.from_entry(entry)
        reason = f"the start of {attempt.describe()} was interrupted and no agent it started is alive: start it"
        out.changes.append(Change(spec.address, Action.CREATE, reason, False, created, spec.location, spec, entry))
        return
    fields = field_changes(dict(entry.get("applied") or {}), after, spec.secrets)
    dead = _agent_state(entry, live, live_ids)
    if dead is not None:
        extra = " with the new configuration" if fields else ""
        out.changes.append(
            Change(spec.address, Action.RESTART, f"agent is {dead}: start it again{extra}", False, fields, spec.location, spec, entry)
        )
        return
    _idle_note(str(spec.address), entry, live, out)
    renewal = _token_renewal(entry, now) if mints_token(spec, settings) and not any(f.path == TOKEN_PATH for f in fields) else None
    if not fields and renewal is None:
        out.unchanged += 1
        return
    fixed = [f.path for f in fields if not f.path.startswith(AGENT_UPDATABLE_PREFIXES)]
    if fixed:
        reason = f"{', '.join(fixed)} cannot be changed on a running agent: stop and start it"
        out.changes.append(Change(spec.address, Action.REPLACE, reason, True, fields, spec.location, spec, entry))
        return
    reasons = [f"{', '.join(f.path for f in fields)} can be updated in place"] if fields else []
    if renewal is not None:
        reasons.append(renewal)
        fields = (*fields, FieldChange(TOKEN_PATH, SENSITIVE, MINTED, sensitive=True, changed=True))
    out.changes.append(Change(spec.address, Action.UPDATE, "; ".join(reasons), False, fields, spec.location, spec, entry))


def _token_renewal(entry: Mapping[str, Any], now: float) -> str | None:
    """The reason to renew a minted token (less than a quarter of its lifetime left), or None."""
    token = entry.get("token")
    if not isinstance(token, Mapping) or not token.get("expires_at"):
        return "token expiry unknown: mint a new one"
    issued, expires = int(token.get("issued_at") or 0), int(token["expires_at"])
    if now <= renew_at(issued, expires):  # a quarter or more of its lifetime is left
        return None
    left = int(expires - now)
    return f"token expires in {format_seconds(left)}" if left > 0 else f"token expired {format_seconds(-left)} ago"


def format_seconds(seconds: int) -> str:
    """4m, 45s, 3h, 3h20m: the largest units, minutes rounded down."""
    if seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


def _diff_agents(desired: Desired, live: Live, ledger: Ledger, out: DiffResult, now: float) -> None:
    owned: dict[str, Mapping[str, Any]] = {}
    for key, raw in ledger.of_kind(Kind.AGENT.value).items():
        entry = _resolve_pending(key, raw, live, out) if not raw.get("agent_id") else raw
        if entry is not None:
            owned[key] = entry
    ambiguous = set(ledger.of_kind(Kind.AGENT.value)) - set(owned)
    live_ids = live.agent_ids()
    declared = {str(a.address) for a in desired.agents}
    for spec in desired.agents:
        if str(spec.address) not in ambiguous:
            _diff_agent(spec, owned.get(str(spec.address)), live, live_ids, ledger.salt, out, desired.settings, now)
    for key in sorted(set(owned) - declared):
        entry = owned[key]
        address = Address.parse(key)
        alive = entry.get("agent_id") and _agent_state(entry, live, live_ids) is None
        reason = (
            "owned and no longer declared: stop it" if alive else "no longer declared and not running: only the ledger entry is dropped"
        )
        out.changes.append(Change(address, Action.DELETE, reason, bool(alive), (), None, None, entry))
    owned_ids = {str(e.get("agent_id")) for e in owned.values() if e.get("agent_id")}
    owned_ids |= {a.agent_id for key in ambiguous for a in live.pending.get(key, ())}  # undecided: not "unmanaged" either
    for agents in live.agents.values():
        for agent in agents:
            if agent.agent_id not in owned_ids:
                out.unmanaged.append(Unmanaged(Kind.AGENT.value, agent.agent_id))


def diff(desired: Desired, live: Live, ledger: Ledger, *, prune: bool = False, now: float | None = None) -> DiffResult:
    """`now` (epoch seconds, default the system clock) decides which minted tokens are due for renewal."""
    out = DiffResult()
    _diff_numbers(desired, live, ledger, prune, out)
    _diff_agents(desired, live, ledger, out, time.time() if now is None else now)
    return out
