"""`graph`: the wiring of the account, declared and live, as Mermaid or Graphviz DOT."""

from __future__ import annotations

from typing import Any

import click

from .. import reconcile, render_graph, wiring
from .common import PATHS_HELP, common_options, flags_from, handles_errors, open_session, out


@click.command(
    epilog=f"""{PATHS_HELP}

Numbers point to their inbound and outbound pipelines, agents to their app and channel. In sync
is a plain line, planned dotted, drift thick red, removed crossed, unmanaged grey.

\\b
Examples:
  agora-reconciler graph infra/agora > wiring.mmd
  agora-reconciler graph infra/agora --format dot | dot -Tsvg > wiring.svg"""
)
@click.argument("paths", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="mermaid (GitHub and GitLab render it in Markdown) or dot (Graphviz).",
)
@common_options
@handles_errors
def graph(paths: tuple[str, ...], fmt: str, **kwargs: Any) -> None:
    """Draw the wiring as declared and as live (reads the account, writes nothing)."""
    session = open_session(paths, flags_from(kwargs, "graph"))
    planned = reconcile.build_plan(session, digests=False)
    picture = wiring.of_account(session.desired, planned.live, planned.ledger, planned.plan)
    out(render_graph.render_mermaid(picture) if fmt == "mermaid" else render_graph.render_dot(picture))
