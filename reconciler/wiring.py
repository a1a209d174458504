"""The wiring of an account as a graph: numbers to their pipelines, agents to their app and channel.

Owns every decision about what a picture shows: which nodes and edges exist, and the state of
each (in sync, planned, drifted, to be removed, unmanaged, not running), from the declaration,
the live snapshot, the ledger and the plan. `render_graph` only draws a `Wiring`. Two views:
`of_account` (declared and live, for `agora-reconciler graph`) and `of_plan` (only what a plan
changes, for the Markdown plan).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .ledger import Ledger
from .model import Desired, Kind, Live, live_phone_essence
from .plan import Action, Change, Plan

DIRECTIONS = ("inbound", "outbound")


class State(str, Enum):
    OK = "ok"  # declared and live agree
    PLANNED = "planned"  # declared, apply creates it
    DRIFT = "drift"  # live differs from what the tool applied, or an agent is not running: apply puts it back
    CHANGED = "changed"  # apply updates or replaces it
    REMOVED = "removed"  # apply removes it
    UNMANAGED = "unmanaged"  # neither declared nor owned: left alone


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # number | pipeline | agent | app | channel
    label: str
    state: State = State.OK


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str  # inbound | outbound | app | channel
    state: State = State.OK


@dataclass(frozen=True)
class Wiring:
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.nodes


@dataclass
class _Builder:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], Edge] = field(default_factory=dict)
    pipeline_names: Mapping[str, str] = field(default_factory=dict)

    def node(self, node_id: str, kind: str, label: str, state: State = State.OK) -> str:
        known = self.nodes.get(node_id)
        if known is None or (known.state is State.OK and state is not State.OK):
            self.nodes[node_id] = Node(node_id, kind, label, state)
        return node_id

    def number(self, phone: str, state: State = State.OK) -> str:
        return self.node(f"number:{phone}", "number", phone, state)

    def pipeline(self, pipeline_id: str) -> str:
        name = self.pipeline_names.get(pipeline_id)
        return self.node(f"pipeline:{pipeline_id}", "pipeline", f"{pipeline_id} ({name})" if name else pipeline_id)

    def app(self, app_id: str) -> str:
        return self.node(f"app:{app_id}", "app", f"app {app_id}")

    def channel(self, app_id: str, channel: str) -> str:
        return self.node(f"channel:{app_id}/{channel}", "channel", f"channel {channel}")

    def edge(self, source: str, target: str, label: str, state: State) -> None:
        self.edges.setdefault((source, target, label), Edge(source, target, label, state))

    def build(self) -> Wiring:
        order = {"number": 0, "agent": 1, "pipeline": 2, "app": 3, "channel": 4}
        nodes = tuple(sorted(self.nodes.values(), key=lambda n: (order.get(n.kind, 9), n.id)))
        edges = tuple(sorted(self.edges.values(), key=lambda e: (e.source, e.label, e.target)))
        return Wiring(nodes, edges)


def _binding(doc: Mapping[str, Any] | None, direction: str) -> str | None:
    value = ((doc or {}).get(f"{direction}_config") or {}).get("pipeline_id")
    return str(value) if value else None


def pipeline_names(live: Live) -> dict[str, str]:
    """Pipeline names the numbers list shows (`associated_pipeline`), by pipeline id."""
    names: dict[str, str] = {}
    for item in live.phone_numbers.values():
        associated = item.get("associated_pipeline") or {}
        if associated.get("pipeline_id") and associated.get("pipeline_name"):
            names[str(associated["pipeline_id"])] = str(associated["pipeline_name"])
    return names


# --------------------------------------------------------------------------- declared and live
def of_account(desired: Desired, live: Live, ledger: Ledger, plan: Plan) -> Wiring:
    """Everything: declared numbers and agents, live ones, with the plan's verdict on each."""
    b = _Builder(pipeline_names=pipeline_names(live))
    actions = {str(c.address): c for c in plan.changes}
    _declared_numbers(b, desired, live, ledger, actions)
    _undeclared_numbers(b, desired, live, ledger, actions)
    _agents(b, desired, live, ledger, actions)
    return b.build()


def _declared_numbers(b: _Builder, desired: Desired, live: Live, ledger: Ledger, actions: Mapping[str, Change]) -> None:
    owned = ledger.of_kind(Kind.PHONE_NUMBER.value)
    for spec in desired.phone_numbers:
        current = live.phone_numbers.get(spec.phone_number)
        entry = owned.get(str(spec.address))
        seen = live_phone_essence(current) if current is not None else None
        applied = (entry or {}).get("applied")
        change = actions.get(str(spec.address))
        node = b.number(spec.phone_number, State.PLANNED if current is None else _node_state(change))
        for direction in DIRECTIONS:
            want = spec.inbound_pipeline_id if direction == "inbound" else spec.outbound_pipeline_id
            have = _binding(seen, direction)
            if want and want == have:
                b.edge(node, b.pipeline(want), direction, State.OK)
                continue
            if want:
                b.edge(node, b.pipeline(want), direction, State.PLANNED)
            if have:
                drifted = entry is not None and _binding(applied, direction) == want
                b.edge(node, b.pipeline(have), direction, State.DRIFT if drifted else State.REMOVED)


def _undeclared_numbers(b: _Builder, desired: Desired, live: Live, ledger: Ledger, actions: Mapping[str, Change]) -> None:
    declared = {n.phone_number for n in desired.phone_numbers}
    for phone in sorted(set(live.phone_numbers) - declared):
        change = actions.get(f"{Kind.PHONE_NUMBER.value}/{phone}")
        state = State.REMOVED if change is not None and change.action is Action.DELETE else State.UNMANAGED
        node = b.number(phone, state)
        seen = live_phone_essence(live.phone_numbers[phone])
        for direction in DIRECTIONS:
            have = _binding(seen, direction)
            if have:
                b.edge(node, b.pipeline(have), direction, state)


def _node_state(change: Change | None) -> State:
    if change is None:
        return State.OK
    return {Action.CREATE: State.PLANNED, Action.DELETE: State.REMOVED, Action.RESTART: State.DRIFT}.get(change.action, State.CHANGED)


def _agents(b: _Builder, desired: Desired, live: Live, ledger: Ledger, actions: Mapping[str, Change]) -> None:
    owned = ledger.of_kind(Kind.AGENT.value)
    declared = set()
    for spec in desired.agents:
        declared.add(str(spec.address))
        change = actions.get(str(spec.address))
        state = _node_state(change)
        node = b.node(f"agent:{spec.name}", "agent", spec.name, state)
        entry = owned.get(str(spec.address)) or {}
        old_app, old_channel = str(entry.get("app_id") or spec.app_id), str(entry.get("channel") or spec.channel)
        if entry and (old_app, old_channel) != (spec.app_id, spec.channel):
            if old_app != spec.app_id:
                b.edge(node, b.app(old_app), "app", State.REMOVED)
            b.edge(node, b.channel(old_app, old_channel), "channel", State.REMOVED)
            state = State.PLANNED
        b.edge(node, b.app(spec.app_id), "app", State.PLANNED if state is State.PLANNED else State.OK)
        b.edge(node, b.channel(spec.app_id, spec.channel), "channel", state)
    for key, entry in sorted(owned.items()):
        if key in declared:
            continue
        node = b.node(f"agent:{key.split('/', 1)[1]}", "agent", key.split("/", 1)[1], State.REMOVED)
        if entry.get("app_id"):
            b.edge(node, b.app(str(entry["app_id"])), "app", State.REMOVED)
            if entry.get("channel"):
                b.edge(node, b.channel(str(entry["app_id"]), str(entry["channel"])), "channel", State.REMOVED)
    owned_ids = {str(e.get("agent_id")) for e in owned.values() if e.get("agent_id")}
    for app_id, agents in sorted(live.agents.items()):
        for agent in agents:
            if agent.agent_id not in owned_ids:
                node = b.node(f"agent-id:{agent.agent_id}", "agent", f"{agent.agent_id} ({agent.status})", State.UNMANAGED)
                b.edge(node, b.app(app_id), "app", State.UNMANAGED)


# --------------------------------------------------------------------------- what a plan changes
def of_plan(plan: Plan) -> Wiring:
    """Only the resources a plan touches, with the bindings and channels it adds or removes."""
    b = _Builder()
    for change in plan.changes:
        if change.kind == Kind.PHONE_NUMBER.value:
            _plan_number(b, change)
        else:
            _plan_agent(b, change)
    return b.build()


def _field_values(change: Change, path: str) -> tuple[Any, Any] | None:
    for f in change.fields:
        if f.path == path and not f.sensitive:
            return f.before, f.after
    return None


def _plan_number(b: _Builder, change: Change) -> None:
    node = b.number(change.key, _node_state(change))
    for direction in DIRECTIONS:
        values = _field_values(change, f"{direction}_config.pipeline_id")
        if values is None:
            continue
        before, after = values
        if change.action is Action.CREATE:
            before, after = None, after
        if before:
            b.edge(node, b.pipeline(str(before)), direction, State.REMOVED)
        if after:
            b.edge(node, b.pipeline(str(after)), direction, State.PLANNED)


def _plan_agent(b: _Builder, change: Change) -> None:
    node = b.node(f"agent:{change.key}", "agent", change.key, _node_state(change))
    app = _field_values(change, "app_id")
    channel = _field_values(change, "properties.channel")
    prior = change.prior or {}
    if change.action is Action.CREATE or not prior.get("app_id"):
        if app is not None and app[1]:
            b.edge(node, b.app(str(app[1])), "app", State.PLANNED)
            if channel is not None and channel[1]:
                b.edge(node, b.channel(str(app[1]), str(channel[1])), "channel", State.PLANNED)
        return
    old_app, old_channel = str(prior["app_id"]), str(prior.get("channel") or "")
    if change.action is Action.DELETE:
        b.edge(node, b.app(old_app), "app", State.REMOVED)
        if old_channel:
            b.edge(node, b.channel(old_app, old_channel), "channel", State.REMOVED)
        return
    new_app = str(app[1]) if app is not None and app[1] else old_app
    new_channel = str(channel[1]) if channel is not None and channel[1] else old_channel
    moved = (old_app, old_channel) != (new_app, new_channel)
    if moved and old_channel:
        b.edge(node, b.channel(old_app, old_channel), "channel", State.REMOVED)
    b.edge(node, b.app(new_app), "app", State.PLANNED if new_app != old_app else State.OK)
    if new_channel:
        state = State.PLANNED if moved else State.DRIFT if change.action is Action.RESTART else State.OK
        b.edge(node, b.channel(new_app, new_channel), "channel", state)
