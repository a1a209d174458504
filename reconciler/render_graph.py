"""Draws a `Wiring` as Mermaid (GitHub and GitLab render it) or Graphviz DOT. No decisions.

Every state decided in `wiring.py` has one look: in sync is a plain line, planned is dotted,
drift is thick and red, removed ends in a cross, unmanaged is grey. The legend says so.
"""

from __future__ import annotations

import json

from .wiring import Edge, Node, State, Wiring

SHAPES = {"number": ('["', '"]'), "pipeline": ('[["', '"]]'), "agent": ('("', '")'), "app": ('{{"', '"}}'), "channel": ('(["', '"])')}
MERMAID_ARROWS = {
    State.OK: "-->",
    State.CHANGED: "-->",
    State.PLANNED: "-.->",
    State.DRIFT: "==>",
    State.REMOVED: "--x",
    State.UNMANAGED: "-->",
}
MERMAID_EDGE_STYLE = {
    State.DRIFT: "stroke:#d00,stroke-width:3px",
    State.REMOVED: "stroke:#d00,stroke-dasharray:4",
    State.UNMANAGED: "stroke:#aaa",
}
MERMAID_CLASSES = {
    State.PLANNED: "fill:#e6f4ea,stroke:#1a7f37,stroke-dasharray:4",
    State.DRIFT: "fill:#fdecea,stroke:#d00,stroke-width:2px",
    State.CHANGED: "fill:#fff4e5,stroke:#bf8700",
    State.REMOVED: "fill:#fdecea,stroke:#d00,stroke-dasharray:4",
    State.UNMANAGED: "fill:#f2f2f2,stroke:#aaa,color:#888",
}
DOT_SHAPES = {"number": "box", "pipeline": "cds", "agent": "ellipse", "app": "hexagon", "channel": "note"}
DOT_EDGE = {
    State.OK: "",
    State.CHANGED: ', color="#bf8700"',
    State.PLANNED: ', style=dashed, color="#1a7f37"',
    State.DRIFT: ', color="#dd0000", penwidth=3',
    State.REMOVED: ', style=dashed, color="#dd0000", arrowhead=tee',
    State.UNMANAGED: ', color="#aaaaaa", fontcolor="#888888"',
}
DOT_NODE = {
    State.OK: "",
    State.CHANGED: ', color="#bf8700"',
    State.PLANNED: ', style="dashed", color="#1a7f37"',
    State.DRIFT: ', color="#dd0000", penwidth=2',
    State.REMOVED: ', style="dashed", color="#dd0000"',
    State.UNMANAGED: ', style="filled", fillcolor="#f2f2f2", color="#aaaaaa", fontcolor="#888888"',
}
LEGEND = "in sync: plain; planned: dotted green; changed: orange; drift: thick red; removed: red cross; unmanaged: grey"


def _label(node: Node) -> str:
    text = node.label if node.state is State.OK else f"{node.label} ({node.state.value})"
    return text.replace('"', "#quot;")


def _edge_label(edge: Edge) -> str:
    return edge.label if edge.state is State.OK else f"{edge.label} ({edge.state.value})"


def render_mermaid(wiring: Wiring) -> str:
    """A `flowchart LR`; node ids are n0, n1, ... in the wiring's (sorted) order."""
    ids = {node.id: f"n{i}" for i, node in enumerate(wiring.nodes)}
    lines = ["flowchart LR", f"  %% {LEGEND}"]
    for node in wiring.nodes:
        opening, closing = SHAPES.get(node.kind, ('["', '"]'))
        lines.append(f"  {ids[node.id]}{opening}{_label(node)}{closing}")
    styles: list[str] = []
    for index, edge in enumerate(wiring.edges):
        lines.append(f"  {ids[edge.source]} {MERMAID_ARROWS[edge.state]}|{_edge_label(edge)}| {ids[edge.target]}")
        if edge.state in MERMAID_EDGE_STYLE:
            styles.append(f"  linkStyle {index} {MERMAID_EDGE_STYLE[edge.state]}")
    lines += styles
    for state, style in MERMAID_CLASSES.items():
        members = [ids[n.id] for n in wiring.nodes if n.state is state]
        if members:
            lines.append(f"  classDef {state.value} {style}")
            lines.append(f"  class {','.join(members)} {state.value}")
    return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def render_dot(wiring: Wiring) -> str:
    lines = ["digraph agora {", "  rankdir=LR;", '  node [fontname="Helvetica"];', f"  // {LEGEND}"]
    for node in wiring.nodes:
        label = node.label if node.state is State.OK else f"{node.label} ({node.state.value})"
        lines.append(f"  {_dot_id(node.id)} [label={_dot_id(label)}, shape={DOT_SHAPES.get(node.kind, 'box')}{DOT_NODE[node.state]}];")
    for edge in wiring.edges:
        lines.append(f"  {_dot_id(edge.source)} -> {_dot_id(edge.target)} [label={_dot_id(_edge_label(edge))}{DOT_EDGE[edge.state]}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
