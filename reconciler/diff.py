"""Desired x Live x Ledger -> the changes of a plan, each with its reason and field diffs.

Owns the decisions of DESIGN.md section 3: what is created, updated in place, replaced,
deleted, restarted, adopted or left alone, and why. Resources are compared on their "essence"
(defaults filled in, server-owned fields removed; secrets as salted fingerprints); only essences
that differ are deep-diffed, with `deepdiff`, and the result is turned into `FieldChange`s with
sensitive values masked right here. The only module that imports `deepdiff`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .ledger import Ledger
from .model import (
    AGENT_UPDATABLE_PREFIXES,
    BINDING_PATHS,
    LIVE_STATUSES,
    Address,
    AgentSpec,
    Desired,
    Kind,
    Live,
    PhoneNumberSpec,
    is_secret_path,
    live_phone_essence,
    mask_secrets,
    secret_display,
)
from .plan import Action, Change, FieldChange, Unmanaged
from .secrets import SENSITIVE, fingerprint

_MISSING = object()


@dataclass
class DiffResult:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    unmanaged: list[Unmanaged] = field(default_factory=list)
    adopted: list[Address] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- essences
def fingerprint_secrets(value: Any, secrets: Mapping[str, str], salt: str, path: str = "") -> Any:
    """Replace every secret subtree by its salted fingerprint (what the ledger may hold)."""
    if path and is_secret_path(path, secrets):
        return fingerprint(salt, value)
    if isinstance(value, Mapping):
        return {k: fingerprint_secrets(v, secrets, salt, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [fingerprint_secrets(v, secrets, salt, path) for v in value]
    return value


def applied_agent_essence(spec: AgentSpec, salt: str) -> dict[str, Any]:
    result: dict[str, Any] = fingerprint_secrets(spec.essence(), spec.secrets, salt)
    return result


def phone_secrets(spec: PhoneNumberSpec) -> dict[str, str]:
    secrets = dict(spec.secrets)
    for path in spec.write_only():
        secrets.setdefault(path, SENSITIVE)
    return secrets


def applied_phone_essence(spec: PhoneNumberSpec, salt: str) -> dict[str, Any]:
    """Readable essence plus write-only values, secrets fingerprinted (for the ledger)."""
    result: dict[str, Any] = fingerprint_secrets(spec.essence(), phone_secrets(spec), salt)
    result["write_only"] = {path: fingerprint(salt, value) for path, value in sorted(spec.write_only().items())}
    return result


# --------------------------------------------------------------------------- field diffs
def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, Mapping) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _shown(value: Any, path: str, secrets: Mapping[str, str]) -> Any:
    if value is _MISSING:
        return None
    return mask_secrets(value, secrets, path)


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[FieldChange, ...]:
    """The differing fields of two essences (lists compared whole), secrets masked."""
    if before == after:
        return ()
    from deepdiff import DeepDiff  # imported on first use: in-sync plans never pay for it

    paths: set[tuple[str, ...]] = set()
    for items in DeepDiff(before, after, verbose_level=2).tree.values():
        for item in items:
            keys: list[str] = []
            for part in item.path(output_format="list"):
                if isinstance(part, int):
                    break
                keys.append(str(part))
            paths.add(tuple(keys))
    paths = {p for p in paths if not any(p[: len(q)] == q and p != q for q in paths)}
    out = []
    for parts in sorted(paths):
        dotted = ".".join(parts)
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
    before = live_phone_essence(live)
    after = spec.essence()
    if entry is not None:
        # Write-only values: what we applied last (fingerprints) against what is declared now.
        before["write_only"] = dict(entry.get("applied", {}).get("write_only", {}))
        after["write_only"] = {p: fingerprint(salt, v) for p, v in sorted(spec.write_only().items())}
    fields = field_changes(before, after, {**secrets, **{f"write_only.{p}": SENSITIVE for p in spec.write_only()}, "write_only": SENSITIVE})
    if not fields:
        out.unchanged += 1
        return
    immutable = [f.path for f in fields if f.path not in BINDING_PATHS]
    drift = entry is not None and _declared_unchanged(spec, entry, salt)
    origin = "changed outside the tool (drift): " if drift else ""
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


def _declared_unchanged(spec: PhoneNumberSpec, entry: Mapping[str, Any], salt: str) -> bool:
    return dict(entry.get("applied") or {}) == applied_phone_essence(spec, salt)


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


def _diff_agent(spec: AgentSpec, entry: Mapping[str, Any] | None, live: Live, live_ids: set[str], salt: str, out: DiffResult) -> None:
    after = applied_agent_essence(spec, salt)
    if entry is None:
        out.changes.append(
            Change(
                spec.address,
                Action.CREATE,
                "not started yet",
                False,
                tuple(created_fields(spec.essence(), spec.secrets)),
                spec.location,
                spec,
            )
        )
        return
    if not entry.get("agent_id"):
        reason = f"the start of instance {entry.get('instance_name')} was interrupted: apply resumes it without a duplicate"
        out.changes.append(
            Change(
                spec.address, Action.CREATE, reason, False, tuple(created_fields(spec.essence(), spec.secrets)), spec.location, spec, entry
            )
        )
        return
    fields = field_changes(dict(entry.get("applied") or {}), after, spec.secrets)
    dead = _agent_state(entry, live, live_ids)
    if dead is not None:
        extra = " with the new configuration" if fields else ""
        out.changes.append(
            Change(spec.address, Action.RESTART, f"agent is {dead}: start it again{extra}", False, fields, spec.location, spec, entry)
        )
        return
    if not fields:
        out.unchanged += 1
        return
    fixed = [f.path for f in fields if not f.path.startswith(AGENT_UPDATABLE_PREFIXES)]
    if fixed:
        reason = f"{', '.join(fixed)} cannot be changed on a running agent: stop and start it"
        out.changes.append(Change(spec.address, Action.REPLACE, reason, True, fields, spec.location, spec, entry))
    else:
        reason = f"{', '.join(f.path for f in fields)} can be updated in place"
        out.changes.append(Change(spec.address, Action.UPDATE, reason, False, fields, spec.location, spec, entry))


def _diff_agents(desired: Desired, live: Live, ledger: Ledger, out: DiffResult) -> None:
    owned = ledger.of_kind(Kind.AGENT.value)
    live_ids = live.agent_ids()
    declared = {str(a.address) for a in desired.agents}
    for spec in desired.agents:
        _diff_agent(spec, owned.get(str(spec.address)), live, live_ids, ledger.salt, out)
    for key in sorted(set(owned) - declared):
        entry = owned[key]
        address = Address.parse(key)
        alive = entry.get("agent_id") and _agent_state(entry, live, live_ids) is None
        reason = (
            "owned and no longer declared: stop it" if alive else "no longer declared and not running: only the ledger entry is dropped"
        )
        out.changes.append(Change(address, Action.DELETE, reason, bool(alive), (), None, None, entry))
    owned_ids = {str(e.get("agent_id")) for e in owned.values() if e.get("agent_id")}
    for agents in live.agents.values():
        for agent in agents:
            if agent.agent_id not in owned_ids:
                out.unmanaged.append(Unmanaged(Kind.AGENT.value, agent.agent_id))


def diff(desired: Desired, live: Live, ledger: Ledger, *, prune: bool = False) -> DiffResult:
    out = DiffResult()
    _diff_numbers(desired, live, ledger, prune, out)
    _diff_agents(desired, live, ledger, out)
    return out
