"""`export`: the live numbers as a configuration document."""

from __future__ import annotations

from typing import Any

import click

from .. import config, reconcile
from .common import (
    flags_from,
    handles_errors,
    make_client,
    out,
)


@click.command()
@click.option("--app-id", help="Also list the agents running in this app (as comments: their properties cannot be read).")
@click.option("--endpoint", help="local, us, eu, ap, cn or a URL (env AGORA_ENDPOINT).")
@click.option("--state", "state", help="Ledger file (for endpoint local: the local API lives next to it).")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", is_flag=True)
@handles_errors
def export(app_id: str | None, **kwargs: Any) -> None:
    """Print the live numbers as a configuration document ready to commit."""
    options = reconcile.resolve_options(None, flags_from(kwargs, "export"))
    client = make_client(options)
    doc = reconcile.export_document(client)
    text = config.dump_document(doc)
    if app_id:
        agents = list(client.iter_agents(app_id, from_time=0))
        text += f"# {len(agents)} agent(s) running in app {app_id} are not exported: the API does not return start properties.\n"
        text += "".join(f"#   {a['agent_id']} {a.get('status')}\n" for a in agents)
    out(text)
