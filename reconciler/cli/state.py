"""`state list/show/forget/adopt`: inspecting and editing the ledger."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import config, reconcile
from ..errors import ReconcilerError
from ..ledger import Backend, with_history
from ..ledger.transfer import migrate
from .common import (
    err,
    handles_errors,
    load_desired,
    open_session,
    out,
    setup_logging,
)

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def state() -> None:
    """Inspect and edit the ledger."""


def _state_backend(
    config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None = None
) -> tuple[Backend, reconcile.Options]:
    desired = None
    if config_paths or Path(config.DEFAULT_PATH).exists():
        desired = load_desired(config_paths)
    options = reconcile.resolve_options(desired, {"state": state_flag, "state_name": state_name})
    return reconcile.backend_for(options), options


_config_option = click.option("-c", "--config", "config_paths", multiple=True, help="Configuration path (for settings.state).")


def _state_option(fn: F) -> F:
    fn = click.option(
        "--state-name",
        "state_name",
        help="The ledger's name in a PostgreSQL database (env AGORA_RECONCILER_STATE_NAME; default: the config folder's name).",
    )(fn)
    fn = click.option("--state", "state_flag", help="Ledger file or postgresql:// URL (env AGORA_RECONCILER_STATE).")(fn)
    return fn


_lock_timeout_option = click.option(
    "--lock-timeout", type=float, default=0.0, metavar="SECONDS", help="Wait this long for the ledger lock."
)


@state.command("list")
@_config_option
@_state_option
@handles_errors
def state_list(config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None) -> None:
    """Every address in the ledger."""
    backend, _ = _state_backend(config_paths, state_flag, state_name)
    for address, entry in reconcile.state_entries(backend):
        extra = f" {entry.get('agent_id') or 'pending ' + str(entry.get('instance_name'))}" if address.startswith("agent/") else ""
        out(f"{address}{extra}\n")


@state.command("show")
@click.argument("address")
@click.option("--serial", type=click.IntRange(1), help="As it was at this serial (PostgreSQL ledgers keep every serial).")
@_config_option
@_state_option
@handles_errors
def state_show(address: str, serial: int | None, config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None) -> None:
    """One ledger entry (secrets appear only as fingerprints)."""
    backend, _ = _state_backend(config_paths, state_flag, state_name)
    entries = with_history(backend).load_at(serial).resources if serial is not None else dict(reconcile.state_entries(backend))
    if address not in entries:
        at = f" at serial {serial}" if serial is not None else ""
        raise ReconcilerError(f"{address} is not in the ledger {backend.location}{at}")
    out(json.dumps(entries[address], indent=2, sort_keys=True) + "\n")


@state.command("forget")
@click.argument("address")
@_config_option
@_state_option
@_lock_timeout_option
@handles_errors
def state_forget(address: str, config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None, lock_timeout: float) -> None:
    """Stop owning ADDRESS without touching the account."""
    backend, _ = _state_backend(config_paths, state_flag, state_name)
    reconcile.state_forget(backend, address, lock_timeout=lock_timeout, command="agora-reconciler state forget")
    err(f"Forgot {address}; the account was not changed.")


@state.command("adopt")
@click.argument("address")
@click.option("--agent-id", required=True, help="The running agent to own as ADDRESS.")
@_config_option
@_state_option
@_lock_timeout_option
@click.option("--endpoint")
@handles_errors
def state_adopt(
    address: str,
    agent_id: str,
    config_paths: tuple[str, ...],
    state_flag: str | None,
    state_name: str | None,
    lock_timeout: float,
    endpoint: str | None,
) -> None:
    """Own a running agent as the instance of a declared agent."""
    flags = {"state": state_flag, "state_name": state_name, "lock_timeout": lock_timeout, "endpoint": endpoint}
    session = open_session(config_paths, {**flags, "command": "agora-reconciler state adopt"})
    reconcile.state_adopt_agent(session, address, agent_id)
    err(f"Adopted agent {agent_id} as {address}.")


@state.command("history")
@click.option("--prune-before", type=click.FloatRange(0), metavar="DAYS", help="Forget the serials saved more than DAYS days ago.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_config_option
@_state_option
@handles_errors
def state_history(
    prune_before: float | None, fmt: str, config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None
) -> None:
    """Every saved serial, newest first: when, by whom, how many entries changed."""
    backend, _ = _state_backend(config_paths, state_flag, state_name)
    history = with_history(backend)
    if prune_before is not None:
        cutoff = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=prune_before)
        removed = history.prune_history(cutoff)
        err(f"Pruned {removed} serial(s) saved before {cutoff.replace(microsecond=0).isoformat()} from {backend.location}.")
        return
    entries = history.history()
    if fmt == "json":
        out(json.dumps([vars(e) for e in entries], indent=2) + "\n")
        return
    for e in entries:
        out(f"{e.serial:>6}  {e.saved_at}  {e.saved_by}  {e.command}  {e.changed} changed, {e.resources} entries\n")


@state.command("migrate")
@click.option("--from", "source", required=True, metavar="STATE", help="The ledger to copy: a file or a postgresql:// URL.")
@click.option("--to", "target", required=True, metavar="STATE", help="Where to: an empty file or PostgreSQL ledger.")
@click.option("--state-name", "state_name", help="The PostgreSQL ledger's name (default: the current folder's name).")
@_lock_timeout_option
@click.option("-v", "--verbose", count=True)
@handles_errors
def state_migrate(source: str, target: str, state_name: str | None, lock_timeout: float, verbose: int) -> None:
    """Copy a ledger to another backend as it is (lineage, serial, entries); the source is kept."""
    setup_logging(verbose, False)
    options = reconcile.resolve_options(None, {"state": source, "state_name": state_name})
    src = reconcile.backend_for(options)
    dst = reconcile.backend_for(reconcile.resolve_options(None, {"state": target, "state_name": state_name}))
    ledger = migrate(src, dst, lock_timeout=lock_timeout, command="agora-reconciler state migrate")
    err(
        f"Migrated serial {ledger.serial} ({len(ledger.resources)} entries) from {src.location} to {dst.location}; the source was not changed."
    )
