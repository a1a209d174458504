"""Reads the live account into `Live` with the fewest requests the API allows.

One `phone_numbers.list`, and one paginated `agents.list` sweep (100 a page) per app id, in
parallel, with an explicit `from_time` older than every ledger entry of that app and a `state`
filter for the live states: the API's defaults (last 2 hours, RUNNING only) would make every
long-running agent look dead. Only a ledger agent missing from its sweep costs one more GET, to
say whether it is STOPPED, FAILED or gone. Any failure aborts: a partial read is never an empty
account, so it can never plan deletes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .client import LIVE_STATE_CODES, Client
from .errors import ApiError, AuthError, LiveReadError, NotFoundError, ReconcilerError
from .ledger import Ledger
from .model import AgentProbe, Desired, Kind, Live, LiveAgent

MAX_RUNTIME_S = 72 * 3600
MARGIN_S = 3600


def agent_app_ids(desired: Desired, ledger: Ledger) -> list[str]:
    apps = {a.app_id for a in desired.agents}
    apps |= {str(e["app_id"]) for e in ledger.of_kind(Kind.AGENT.value).values() if e.get("app_id")}
    return sorted(apps)


def sweep_from_time(ledger: Ledger, app_id: str, now: float | None = None) -> int:
    """Older than every ledger entry of the app, and than any agent that can still be running."""
    now = time.time() if now is None else now
    starts = [
        float(e["started_at"]) for e in ledger.of_kind(Kind.AGENT.value).values() if e.get("app_id") == app_id and e.get("started_at")
    ]
    return int(min([now - MAX_RUNTIME_S - MARGIN_S] + [s - MARGIN_S for s in starts]))


def _sweep(client: Client, app_id: str, from_time: int) -> tuple[LiveAgent, ...]:
    return tuple(
        LiveAgent(app_id, str(item["agent_id"]), str(item.get("status", "")), int(item.get("start_ts") or 0))
        for item in client.iter_agents(app_id, from_time=from_time, states=LIVE_STATE_CODES)
    )


def _probe(client: Client, app_id: str, agent_id: str) -> AgentProbe:
    try:
        doc = client.get_agent(app_id, agent_id)
    except NotFoundError:
        return AgentProbe(agent_id, "GONE", "the API no longer knows it")
    return AgentProbe(agent_id, str(doc.get("status", "UNKNOWN")), str(doc.get("message") or ""))


def read_live(client: Client, desired: Desired, ledger: Ledger, *, parallelism: int = 8) -> Live:
    """Snapshot the account. Raises `LiveReadError` ("cannot read live state") on any failure."""
    apps = agent_app_ids(desired, ledger)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(apps) + 1))) as pool:
            numbers_future = pool.submit(client.list_numbers)
            sweeps = {app: pool.submit(_sweep, client, app, sweep_from_time(ledger, app)) for app in apps}
            numbers = numbers_future.result()
            agents = {app: future.result() for app, future in sweeps.items()}
            live_ids = {a.agent_id for found in agents.values() for a in found}
            missing = [
                (str(e["app_id"]), str(e["agent_id"]))
                for e in ledger.of_kind(Kind.AGENT.value).values()
                if e.get("agent_id") and e.get("app_id") and e["agent_id"] not in live_ids
            ]
            probes = {agent_id: pool.submit(_probe, client, app, agent_id) for app, agent_id in missing}
            probed = {agent_id: future.result() for agent_id, future in probes.items()}
    except AuthError:
        raise
    except (ApiError, ReconcilerError) as exc:
        raise LiveReadError(f"cannot read live state: {exc}") from None
    return Live(phone_numbers=_index_numbers(numbers), agents=agents, probes=probed)


def _index_numbers(items: Iterable[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("phone_number"), str):
            raise LiveReadError("cannot read live state: phone-numbers list returned an item without phone_number")
        out[item["phone_number"]] = item
    return out
