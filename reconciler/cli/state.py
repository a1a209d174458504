"""`state list/show/forget/adopt`: inspecting and editing the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import config, reconcile
from ..errors import ReconcilerError
from .common import (
    err,
    handles_errors,
    load_desired,
    open_session,
    out,
)


@click.group()
def state() -> None:
    """Inspect and edit the ledger."""


def _state_backend(config_paths: tuple[str, ...], state_flag: str | None) -> tuple[Any, reconcile.Options]:
    desired = None
    if config_paths or Path(config.DEFAULT_PATH).exists():
        desired = load_desired(config_paths)
    options = reconcile.resolve_options(desired, {"state": state_flag})
    from ..ledger import open_backend

    return open_backend(options.state), options


_config_option = click.option("-c", "--config", "config_paths", multiple=True, help="Configuration path (for settings.state).")
_state_option = click.option("--state", "state_flag", help="Ledger file.")


@state.command("list")
@_config_option
@_state_option
@handles_errors
def state_list(config_paths: tuple[str, ...], state_flag: str | None) -> None:
    """Every address in the ledger."""
    backend, _ = _state_backend(config_paths, state_flag)
    for address, entry in reconcile.state_entries(backend):
        extra = f" {entry.get('agent_id') or 'pending ' + str(entry.get('instance_name'))}" if address.startswith("agent/") else ""
        out(f"{address}{extra}\n")


@state.command("show")
@click.argument("address")
@_config_option
@_state_option
@handles_errors
def state_show(address: str, config_paths: tuple[str, ...], state_flag: str | None) -> None:
    """One ledger entry (secrets appear only as fingerprints)."""
    backend, _ = _state_backend(config_paths, state_flag)
    entries = dict(reconcile.state_entries(backend))
    if address not in entries:
        raise ReconcilerError(f"{address} is not in the ledger {backend.location}")
    out(json.dumps(entries[address], indent=2, sort_keys=True) + "\n")


@state.command("forget")
@click.argument("address")
@_config_option
@_state_option
@handles_errors
def state_forget(address: str, config_paths: tuple[str, ...], state_flag: str | None) -> None:
    """Stop owning ADDRESS without touching the account."""
    backend, _ = _state_backend(config_paths, state_flag)
    reconcile.state_forget(backend, address, command="agora-reconciler state forget")
    err(f"Forgot {address}; the account was not changed.")


@state.command("adopt")
@click.argument("address")
@click.option("--agent-id", required=True, help="The running agent to own as ADDRESS.")
@_config_option
@_state_option
@click.option("--endpoint")
@handles_errors
def state_adopt(address: str, agent_id: str, config_paths: tuple[str, ...], state_flag: str | None, endpoint: str | None) -> None:
    """Own a running agent as the instance of a declared agent."""
    session = open_session(config_paths, {"state": state_flag, "endpoint": endpoint, "command": "agora-reconciler state adopt"})
    reconcile.state_adopt_agent(session, address, agent_id)
    err(f"Adopted agent {agent_id} as {address}.")
