"""`export`: the live numbers as a configuration document ready to commit (onboarding)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import click

from .. import config, reconcile
from ..errors import ReconcilerError
from .common import (
    flags_from,
    handles_errors,
    load_desired,
    make_client,
    note,
    out,
    timeout_option,
)


def _options(config_paths: tuple[str, ...], kwargs: dict[str, Any]) -> reconcile.Options:
    """Like `plan`: settings (endpoint, ledger) from the configuration when there is one."""
    desired = load_desired(config_paths) if config_paths or Path(config.DEFAULT_PATH).exists() else None
    options = reconcile.resolve_options(desired, flags_from(kwargs, "export"))
    if options.endpoint.lower() == "local":
        store = Path(options.state).parent / "local-api.json"
        if not store.exists():
            looked = f"next to the ledger {Path(options.state).resolve()}"
            why = "" if desired else f" (no {config.DEFAULT_PATH} here and no -c given, so the default ledger location was used)"
            raise ReconcilerError(
                f"no local API store at {store.resolve()}: the embedded emulator keeps it {looked}{why}; "
                "pass -c with the configuration that uses endpoint: local, or --state with its ledger"
            )
    return options


def _agent_comments(agents: dict[str, list[dict[str, Any]]]) -> str:
    lines: list[str] = []
    for app_id, found in agents.items():
        lines.append("")
        lines.append(f"# {len(found)} agent(s) running in app {app_id}: not exported, the API does not return their start")
        lines.append("# properties. Declare each under agents: and own it with")
        lines.append("#   agora-reconciler state adopt agent/NAME --agent-id AGENT_ID")
        for agent in found:
            started = agent.get("start_ts")
            when = datetime.datetime.fromtimestamp(int(started), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if started else "?"
            lines.append(f"#   {agent.get('agent_id')}  {agent.get('status')}  started {when}")
    return "\n".join(lines) + ("\n" if lines else "")


@click.command(
    epilog="""The document is valid as it is: plan on it shows no changes, and the first apply makes no
API call but records the numbers as owned. SIP passwords cannot be read: where a SIP user is set,
the password becomes ${SIP_PASSWORD_<digits>}, with a comment naming the variable to set.

\b
Examples:
  agora-reconciler export > infra/agora/numbers.yaml
  agora-reconciler export --app-id "$AGORA_APP_ID" -c examples/quickstart"""
)
@click.option(
    "--app-id",
    "app_ids",
    multiple=True,
    metavar="ID",
    help="Also list the agents running in this app, as comments (their start properties cannot be read); repeatable.",
)
@click.option(
    "-c",
    "--config",
    "config_paths",
    multiple=True,
    metavar="PATH",
    help="A configuration whose settings (endpoint, ledger) to use; default agora.yaml when it exists.",
)
@click.option("--endpoint", help="local, us, eu, ap, cn or an https:// URL (env AGORA_ENDPOINT).")
@click.option("--state", "state", help="Ledger file (env AGORA_RECONCILER_STATE); with endpoint local, the local API store is next to it.")
@timeout_option
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr (the document on stdout is unaffected).")
@handles_errors
def export(app_ids: tuple[str, ...], config_paths: tuple[str, ...], **kwargs: Any) -> None:
    """Print the live phone numbers as a configuration document ready to commit."""
    options = _options(config_paths, kwargs)
    exported = reconcile.export_document(make_client(options, kwargs.get("timeout")), app_ids)
    header = [f"Exported from the live account by agora-reconciler export: {len(exported.document['phone_numbers'])} phone number(s)."]
    if exported.variables:
        header.append("Set these variables before plan/apply (SIP passwords are write-only): " + ", ".join(exported.variables))
    out(config.dump_document(exported.document, comments=exported.comments, header=header) + _agent_comments(exported.agents))
    note(f"Exported {len(exported.document['phone_numbers'])} phone number(s).")
