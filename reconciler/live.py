"""Reads the live account into `Live` with the fewest requests the API allows.

One `phone_numbers.list`, and one paginated `agents.list` sweep (100 a page) per app id, in
parallel, with an explicit `from_time` older than every ledger entry of that app and a `state`
filter for the alive states (IDLE counts as alive): the API's defaults (last 2 hours, RUNNING
only) would make every long-running agent look dead. Only a ledger agent missing from its sweep
costs one more GET, to say whether it is STOPPED, FAILED or gone. Any failure aborts: a partial
read is never an empty account, so it can never plan deletes. The whole read shares one time
budget (the client's `bounded()`: 3 x the read timeout), so a silent API fails in bounded time.

The API's list filters are uncertain (agora-api.md section 14): when `agents.list` refuses a
multi-state filter or a page size with a 400, the next weaker query form is tried (one query per
state; pages of 20) and remembered for the client's lifetime (the run). A start whose answer was
lost (a pending ledger entry) is looked up in the app and channel it was started with: by name
when agent GET shows names, else the unowned agents of that channel started after the attempt.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .client import Client
from .errors import ApiError, AuthError, BadRequestError, LiveReadError, NotFoundError, ReconcilerError
from .ledger import Ledger
from .model import AgentProbe, Desired, Kind, Live, LiveAgent

log = logging.getLogger("reconciler.live")

MAX_RUNTIME_S = 72 * 3600
MARGIN_S = 3600
CLOCK_SKEW_S = 120  # how far the API's clock may be behind ours when matching a start attempt
ALIVE_STATE_CODES = (0, 1, 2, 5)  # IDLE, STARTING, RUNNING, RECOVERING
# agents.list query forms, strongest first: (one query for several states, page size)
QUERY_FORMS = ((False, 100), (True, 100), (False, 20), (True, 20))


@dataclass
class ListForm:
    """The agents.list query form that works against this API, learned from its 400s."""

    index: int = 0
    settled: bool = False  # a query in form `index` has been answered
    refusals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    probe: threading.Lock = field(default_factory=threading.Lock)

    @property
    def single_state(self) -> bool:
        return QUERY_FORMS[self.index][0]

    @property
    def limit(self) -> int:
        return QUERY_FORMS[self.index][1]

    def describe(self) -> str:
        return f"{'one state per query' if self.single_state else 'several states per query'} and pages of {self.limit}"

    def weaken(self, tried: int, several_states: bool, error: ApiError) -> bool:
        """After a 400 on form `tried`: move to the next form that changes this query. False if none."""
        with self.lock:
            if self.index != tried:
                return True  # another thread already moved on
            for nxt in range(tried + 1, len(QUERY_FORMS)):
                single, limit = QUERY_FORMS[nxt]
                if limit != self.limit or (several_states and single != self.single_state):
                    before = self.describe()
                    self.index = nxt
                    self.refusals.append(f"agents.list refused {before} (HTTP 400): using {self.describe()} for this run")
                    log.info("agents.list answered 400 (%s): falling back to %s", error, self.describe())
                    return True
            return False


_FORMS: weakref.WeakKeyDictionary[Client, ListForm] = weakref.WeakKeyDictionary()
_FORMS_LOCK = threading.Lock()


def list_form(client: Client) -> ListForm:
    with _FORMS_LOCK:
        form = _FORMS.get(client)
        if form is None:
            form = _FORMS[client] = ListForm()
        return form


def list_agents(
    client: Client, app_id: str, *, from_time: int, states: tuple[int, ...], channel: str | None = None
) -> list[dict[str, Any]]:
    """Every agent matching the filter, over all pages, in the query form this API accepts.

    Until one query form has worked, one caller at a time probes (parallel sweeps would each meet
    the same 400); the others wait for its first page and then use what it learned."""
    form = list_form(client)
    while True:
        probing = not form.settled
        if probing:
            form.probe.acquire()
            probing = not form.settled
            if not probing:
                form.probe.release()
        tried = form.index
        single, limit = QUERY_FORMS[tried]
        try:
            seen: set[str] = set()
            out = []
            for group in [(s,) for s in states] if single else [states]:
                pages: Iterator[dict[str, Any]] = client.iter_agents(
                    app_id, from_time=from_time, states=group, channel=channel, limit=limit
                )
                if probing:  # the first page answered: this form works
                    pages = itertools.chain(list(itertools.islice(pages, 1)), pages)
                    form.settled, probing = True, False
                    form.probe.release()
                for item in pages:
                    if str(item.get("agent_id")) not in seen:
                        seen.add(str(item.get("agent_id")))
                        out.append(item)
            return out
        except BadRequestError as exc:
            if not form.weaken(tried, len(states) > 1, exc):
                raise
        finally:
            if probing:
                form.probe.release()


def agent_app_ids(desired: Desired, ledger: Ledger) -> list[str]:
    apps = {a.app_id for a in desired.agents}
    apps |= {str(e["app_id"]) for e in ledger.of_kind(Kind.AGENT.value).values() if e.get("app_id")}
    return sorted(apps)


def sweep_from_time(ledger: Ledger, app_id: str, now: float | None = None) -> int:
    """Older than every ledger entry of the app, and than any agent that can still be running."""
    now = time.time() if now is None else now
    starts = [
        float(e.get("started_at") or e["attempted_at"])
        for e in ledger.of_kind(Kind.AGENT.value).values()
        if e.get("app_id") == app_id and (e.get("started_at") or e.get("attempted_at"))
    ]
    return int(min([now - MAX_RUNTIME_S - MARGIN_S] + [s - MARGIN_S for s in starts]))


def _live_agent(app_id: str, item: Mapping[str, Any]) -> LiveAgent:
    return LiveAgent(app_id, str(item["agent_id"]), str(item.get("status", "")), int(item.get("start_ts") or 0))


def _sweep(client: Client, app_id: str, from_time: int) -> tuple[LiveAgent, ...]:
    return tuple(_live_agent(app_id, item) for item in list_agents(client, app_id, from_time=from_time, states=ALIVE_STATE_CODES))


def _probe(client: Client, app_id: str, agent_id: str) -> AgentProbe:
    try:
        doc = client.get_agent(app_id, agent_id)
    except NotFoundError:
        return AgentProbe(agent_id, "GONE", "the API no longer knows it")
    return AgentProbe(agent_id, str(doc.get("status", "UNKNOWN")), str(doc.get("message") or ""))


# --------------------------------------------------------------------------- lost starts
@dataclass(frozen=True)
class StartAttempt:
    """A journaled `POST join`: where, with which name and uid, and when (our clock)."""

    app_id: str
    channel: str
    instance_name: str
    agent_rtc_uid: str | None
    attempted_at: float | None
    previous_agent_id: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> StartAttempt:
        uid = entry.get("agent_rtc_uid")
        return cls(
            app_id=str(entry.get("app_id") or ""),
            channel=str(entry.get("channel") or ""),
            instance_name=str(entry.get("instance_name") or ""),
            agent_rtc_uid=None if uid is None else str(uid),
            attempted_at=float(entry["attempted_at"]) if entry.get("attempted_at") is not None else None,
            previous_agent_id=str(entry["previous_agent_id"]) if entry.get("previous_agent_id") else None,
        )

    def describe(self) -> str:
        uid = f", uid {self.agent_rtc_uid}" if self.agent_rtc_uid else ""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.attempted_at)) if self.attempted_at else "an unknown time"
        return f"instance {self.instance_name} (app {self.app_id}, channel {self.channel}{uid}, attempted at {at})"


def started_by(client: Client, attempt: StartAttempt, owned_ids: Collection[str]) -> tuple[LiveAgent, ...]:
    """The alive agents this attempt may have started: the one with its name when agent GET shows
    names; else (GET without `name`) every unowned agent of its channel started after it."""
    known = attempt.attempted_at is not None
    since = int(attempt.attempted_at - CLOCK_SKEW_S) if attempt.attempted_at is not None else int(time.time() - MAX_RUNTIME_S - MARGIN_S)
    items = list_agents(client, attempt.app_id, from_time=since, states=ALIVE_STATE_CODES, channel=attempt.channel)
    candidates = [
        _live_agent(attempt.app_id, item)
        for item in items
        if str(item["agent_id"]) not in owned_ids and str(item["agent_id"]) != attempt.previous_agent_id
    ]
    candidates = [c for c in candidates if c.start_ts >= since]
    names_shown = False
    for candidate in candidates:
        try:
            doc = client.get_agent(attempt.app_id, candidate.agent_id)
        except NotFoundError:
            continue
        if "name" in doc:
            names_shown = True
            if doc.get("name") == attempt.instance_name:
                return (candidate,)
    if names_shown or not known:
        return ()  # names are shown and none is ours (an unknown time is never matched blindly)
    return tuple(candidates)


def _owned_ids(ledger: Ledger) -> set[str]:
    return {str(e["agent_id"]) for e in ledger.of_kind(Kind.AGENT.value).values() if e.get("agent_id")}


# --------------------------------------------------------------------------- the whole read
def read_live(client: Client, desired: Desired, ledger: Ledger, *, parallelism: int = 8) -> Live:
    """Snapshot the account. Raises `LiveReadError` ("cannot read live state") on any failure."""
    apps = agent_app_ids(desired, ledger)
    agent_entries = ledger.of_kind(Kind.AGENT.value)
    before = client.request_count
    try:
        with client.bounded(), ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(apps) + 1))) as pool:
            numbers_future = pool.submit(client.list_numbers)
            sweeps = {app: pool.submit(_sweep, client, app, sweep_from_time(ledger, app)) for app in apps}
            numbers = numbers_future.result()
            agents = {app: future.result() for app, future in sweeps.items()}
            live_ids = {a.agent_id for found in agents.values() for a in found}
            missing = [
                (str(e["app_id"]), str(e["agent_id"]))
                for e in agent_entries.values()
                if e.get("agent_id") and e.get("app_id") and e["agent_id"] not in live_ids
            ]
            probes = {agent_id: pool.submit(_probe, client, app, agent_id) for app, agent_id in missing}
            owned = _owned_ids(ledger)
            pending = {
                address: pool.submit(started_by, client, StartAttempt.from_entry(entry), owned)
                for address, entry in agent_entries.items()
                if not entry.get("agent_id") and entry.get("instance_name") and entry.get("app_id")
            }
            probed = {agent_id: future.result() for agent_id, future in probes.items()}
            resolved = {address: future.result() for address, future in pending.items()}
    except AuthError:
        raise
    except (ApiError, ReconcilerError) as exc:
        raise LiveReadError(f"cannot read live state: {exc}") from None
    log.info(
        "read the account in %d request(s) (%d app(s); agents.list: %s)",
        client.request_count - before,
        len(apps),
        list_form(client).describe(),
    )
    notes = tuple(list_form(client).refusals)
    return Live(phone_numbers=_index_numbers(numbers), agents=agents, probes=probed, pending=resolved, notes=notes)


def _index_numbers(items: Iterable[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("phone_number"), str):
            raise LiveReadError("cannot read live state: phone-numbers list returned an item without phone_number")
        out[item["phone_number"]] = item
    return out
