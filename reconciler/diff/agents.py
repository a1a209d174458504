"""The diff decisions for agents (DESIGN.md section 3): create, update, restart, delete or leave
alone, and why; pending starts resolved, idle notes and minted-token renewal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..ledger import Ledger
from ..live import StartAttempt
from ..model import (
    AGENT_UPDATABLE_PREFIXES,
    LIVE_STATUSES,
    Address,
    AgentSpec,
    Desired,
    Kind,
    Live,
    Settings,
    mints_token,
)
from ..plan import Action, Change, FieldChange, Unmanaged
from ..secrets import SENSITIVE
from .declared import DeclaredForms
from .fields import MINTED, TOKEN_PATH, applied_agent_essence, created_fields, field_changes
from .result import DiffResult


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


def idle_agents(live: Live) -> set[tuple[str, str]]:
    """(app_id, agent_id) of every listed IDLE agent: worked out once per diff, not once per agent."""
    return {(app_id, a.agent_id) for app_id, agents in live.agents.items() for a in agents if a.status == "IDLE"}


def _idle_note(address: str, entry: Mapping[str, Any], live: Live, out: DiffResult, idle: set[tuple[str, str]] | None = None) -> None:
    agent_id = str(entry.get("agent_id"))
    listed_idle = (str(entry.get("app_id")), agent_id) in (idle_agents(live) if idle is None else idle)
    probe = live.probes.get(agent_id)
    if listed_idle or (probe is not None and probe.status == "IDLE"):
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
    cache: DeclaredForms | None = None,
    idle: set[tuple[str, str]] | None = None,
) -> None:
    if entry is None:
        created = tuple(created_fields(spec.essence(), spec.secrets))
        out.changes.append(Change(spec.address, Action.CREATE, "not started yet", False, created, spec.location, spec))
        return
    if not entry.get("agent_id"):
        attempt = StartAttempt.from_entry(entry)
        reason = f"the start of {attempt.describe()} was interrupted and no agent it started is alive: start it"
        created = tuple(created_fields(spec.essence(), spec.secrets))
        out.changes.append(Change(spec.address, Action.CREATE, reason, False, created, spec.location, spec, entry))
        return
    after = cache.agent(spec, salt) if cache is not None else applied_agent_essence(spec, salt)
    fields = field_changes(dict(entry.get("applied") or {}), after, spec.secrets)
    dead = _agent_state(entry, live, live_ids)
    if dead is not None:
        extra = " with the new configuration" if fields else ""
        out.changes.append(
            Change(spec.address, Action.RESTART, f"agent is {dead}: start it again{extra}", False, fields, spec.location, spec, entry)
        )
        return
    _idle_note(str(spec.address), entry, live, out, idle)
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
    from ..tokens import renew_at  # only agents whose token the tool mints

    token = entry.get("token")
    if not isinstance(token, Mapping) or not token.get("expires_at"):
        return "token expiry unknown: mint a new one"
    issued, expires = int(token.get("issued_at") or 0), int(token["expires_at"])
    if now <= renew_at(issued, expires):  # a quarter or more of its lifetime is left
        return None
    left = int(expires - now)
    return f"token expires in {format_seconds(left)}" if left > 0 else f"token expired {format_seconds(-left)} ago"


IN_FLIGHT_S = 180  # twice the client's whole-call budget (3 x the 30 s read timeout)


def in_flight(journaled_at: Any, now: float) -> bool:
    """Could a create journaled at `journaled_at` still land? A process killed mid-request leaves
    the request to the API: until this long has passed, its absence from a list proves nothing."""
    return journaled_at is not None and now > 0 and now - float(journaled_at) < IN_FLIGHT_S


def format_seconds(seconds: int) -> str:
    """4m, 45s, 3h, 3h20m: the largest units, minutes rounded down."""
    if seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


def _diff_agents(desired: Desired, live: Live, ledger: Ledger, out: DiffResult, now: float, cache: DeclaredForms | None = None) -> None:
    owned: dict[str, Mapping[str, Any]] = {}
    for key, raw in ledger.of_kind(Kind.AGENT.value).items():
        entry = _resolve_pending(key, raw, live, out) if not raw.get("agent_id") else raw
        if entry is not None:
            owned[key] = entry
    ambiguous = set(ledger.of_kind(Kind.AGENT.value)) - set(owned)
    live_ids = live.agent_ids()
    declared = {str(a.address) for a in desired.agents}
    idle = idle_agents(live)
    for spec in desired.agents:
        if str(spec.address) not in ambiguous:
            _diff_agent(spec, owned.get(str(spec.address)), live, live_ids, ledger.salt, out, desired.settings, now, cache, idle)
    for key in sorted(set(owned) - declared):
        entry = owned[key]
        address = Address.parse(key)
        alive = entry.get("agent_id") and _agent_state(entry, live, live_ids) is None
        if not entry.get("agent_id") and in_flight(entry.get("attempted_at"), now):
            out.notes.append(
                f"{address}: its start may still be in flight (attempted {format_seconds(int(now - float(entry['attempted_at'])))} ago) "
                f"and it is no longer declared: kept in the ledger until it settles, stopped by a later apply"
            )
            continue
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
