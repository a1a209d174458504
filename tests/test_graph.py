"""`graph` and the diagram in the Markdown plan: the wiring as declared and live, each state drawn."""

from __future__ import annotations

import re
from typing import Any

from reconciler import render, render_graph, wiring
from reconciler.model import Address
from reconciler.plan import Action, Change, FieldChange, Plan

from .conftest import PREFIX, Emulator, agent_props, basic_headers, number
from .e2e import APP, Project


def test_graph_draws_declared_and_live_wiring_with_drift_planned_and_unmanaged(project: Project, run: Any, emu: Emulator) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    # drift: the inbound binding of +14155550100 changed in the console
    emu.session.patch(
        f"{emu.url}{PREFIX}/phone-numbers/+14155550100",
        json={"inbound_config": {"pipeline_id": "pl_demo_sales"}},
        headers=basic_headers(),
        timeout=30,
    ).raise_for_status()
    # a configuration change: +14155550101 outbound to pl_demo_support (planned), old binding removed
    project.numbers[1]["outbound_config"]["pipeline_id"] = "pl_demo_support"
    project.write()
    emu.seed(phone_numbers=[number("+19995550000", inbound_config={"pipeline_id": "pl_demo_sales"})])
    emu.seed(agents=[{"app_id": APP, "name": "stranger", "preset": "p", "properties": agent_props("elsewhere", uid="77")}])

    writes = len(emu.mutating())
    result = run("graph", str(project.path))
    assert result.exit_code == 0, result.stderr
    assert len(emu.mutating()) == writes, "graph only reads"
    chart = result.stdout
    ids = dict(re.findall(r'^  (n\d+)\S*?"([^"]+)"', chart, re.M))
    by_label = {label: node for node, label in ids.items()}
    assert chart.startswith("flowchart LR\n")
    n100, n101 = by_label["+14155550100 (changed)"], by_label["+14155550101 (changed)"]
    stranger_number = by_label["+19995550000 (unmanaged)"]
    sales, support = by_label["pl_demo_sales (Sales line)"], by_label["pl_demo_support (Support desk)"]
    assert f"  {n100} -.->|inbound (planned)| {support}" in chart  # declared, not live
    assert f"  {n100} ==>|inbound (drift)| {sales}" in chart  # live, differs from what we applied
    assert f"  {n101} --x|outbound (removed)| {sales}" in chart  # apply removes it
    assert f"  {n101} -.->|outbound (planned)| {support}" in chart
    assert f"  {stranger_number} -->|inbound (unmanaged)| {sales}" in chart
    concierge, app, channel = by_label["concierge"], by_label[f"app {APP}"], by_label["channel concierge"]
    assert f"  {concierge} -->|app| {app}" in chart and f"  {concierge} -->|channel| {channel}" in chart
    unmanaged_agent = next(node for label, node in by_label.items() if label.endswith("(RUNNING) (unmanaged)"))
    assert f"  {unmanaged_agent} -->|app (unmanaged)| {app}" in chart
    classes = {state: members.split(",") for members, state in re.findall(r"^  class (\S+) (\w+)$", chart, re.M)}
    assert classes == {"changed": [n100, n101], "unmanaged": [stranger_number, unmanaged_agent]}

    dot = run("graph", str(project.path), "--format", "dot").stdout
    assert dot.startswith("digraph agora {") and dot.rstrip().endswith("}")
    assert '"number:+14155550100" -> "pipeline:pl_demo_sales" [label="inbound (drift)", color="#dd0000", penwidth=3];' in dot
    assert '"number:+19995550000" [label="+19995550000 (unmanaged)", shape=box, style="filled"' in dot


def test_graph_of_an_account_in_sync_has_only_plain_lines(project: Project, run: Any, emu: Emulator) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    chart = run("graph", str(project.path)).stdout
    assert "linkStyle" not in chart and "classDef" not in chart and "(planned)" not in chart
    assert len(re.findall(r" -->\|", chart)) == 6  # 2 numbers x 2 bindings + agent -> app, agent -> channel


def _changes(count: int) -> tuple[Change, ...]:
    return tuple(
        Change(
            Address("phone_number", f"+1415555{i:04d}"),
            Action.UPDATE,
            "binding",
            fields=(FieldChange("inbound_config.pipeline_id", "pl_a", "pl_b"),),
        )
        for i in range(count)
    )


def test_the_markdown_plan_embeds_the_diagram_and_collapses_it_when_large() -> None:
    small = Plan(changes=_changes(2))
    text = render.render_markdown(small, source="infra/agora", diagram=wiring.of_plan(small))
    assert text.startswith("<!-- agora-reconciler plan: infra/agora -->\n") and "```mermaid\nflowchart LR\n" in text
    assert "Wiring of these changes" not in text
    large = Plan(changes=_changes(15))
    collapsed = render.render_markdown(large, source="infra/agora", diagram=wiring.of_plan(large))
    assert "<details><summary>Wiring of these changes: 17 nodes</summary>\n\n```mermaid\n" in collapsed
    huge = Plan(changes=_changes(2000))
    capped = render.render_markdown(huge, diagram=wiring.of_plan(huge))
    assert "```mermaid" not in capped and "too large for a comment: run `agora-reconciler graph`" in capped and len(capped) < 65_000
    assert "```mermaid" not in render.render_markdown(Plan(changes=()), diagram=wiring.of_plan(Plan(changes=())))


def test_labels_cannot_break_out_of_mermaid_or_dot() -> None:
    picture = wiring.Wiring(
        nodes=(wiring.Node("number:x", "number", 'a "quoted" label'), wiring.Node("pipeline:y", "pipeline", "b")),
        edges=(wiring.Edge("number:x", "pipeline:y", "inbound"),),
    )
    assert 'n0["a #quot;quoted#quot; label"]' in render_graph.render_mermaid(picture)
    assert '[label="a \\"quoted\\" label", shape=box]' in render_graph.render_dot(picture)
