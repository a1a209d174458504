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
    handles_errors,
    load_desired,
    note,
    open_session,
    out,
    setup_logging,
)

F = TypeVar("F", bound=Callable[..., Any])


@click.group(
    epilog="""The ledger is found like plan finds it: settings.state of the configuration given with -c
(default agora.yaml when it exists), else AGORA_RECONCILER_STATE or --state, else
.agora-reconciler/state.json in the current folder.

\b
Examples:
  agora-reconciler state list -c infra/agora
  agora-reconciler state show phone_number/+14155550100 -c infra/agora"""
)
def state() -> None:
    """Inspect and edit the ledger (what the tool owns and last applied)."""


def _state_backend(
    config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None = None
) -> tuple[Backend, reconcile.Options]:
    desired = None
    if config_paths or Path(config.DEFAULT_PATH).exists():
        desired = load_desired(config_paths)
    options = reconcile.resolve_options(desired, {"state": state_flag, "state_name": state_name})
    return reconcile.backend_for(options), options


def _where(backend: Any, config_paths: tuple[str, ...], state_flag: str | None) -> str:
    """Where the ledger was looked for, and why there, for a user in the wrong folder."""
    location = backend.location if "://" in backend.location else str(Path(backend.location).resolve())
    if state_flag:
        why = "given with --state"
    elif config_paths:
        why = f"the ledger of {' '.join(config_paths)}"
    elif Path(config.DEFAULT_PATH).exists():
        why = f"the ledger of {config.DEFAULT_PATH} in this folder"
    else:
        why = f"no {config.DEFAULT_PATH} in this folder and no -c given, so the default location"
    return f"{location} ({why})"


_config_option = click.option(
    "-c", "--config", "config_paths", multiple=True, metavar="PATH", help="Configuration path (its settings.state locates the ledger)."
)


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


@state.command("list", epilog="\b\nExample:\n  agora-reconciler state list -c infra/agora")
@_config_option
@_state_option
@handles_errors
def state_list(config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None) -> None:
    """List every address in the ledger (agents with their agent id)."""
    backend, _ = _state_backend(config_paths, state_flag, state_name)
    entries = reconcile.state_entries(backend)
    if not entries:
        note(
            f"No ledger entries at {_where(backend, config_paths, state_flag)}: nothing is owned yet, "
            "or this is not the configuration's ledger (pass -c CONFIG or --state FILE)."
        )
    for address, entry in entries:
        extra = f" {entry.get('agent_id') or 'pending ' + str(entry.get('instance_name'))}" if address.startswith("agent/") else ""
        out(f"{address}{extra}\n")


@state.command("show", epilog="\b\nExample:\n  agora-reconciler state show agent/lobby-concierge -c infra/agora")
@click.argument("address")
@click.option("--serial", type=click.IntRange(1), help="As it was at this serial (PostgreSQL ledgers keep every serial).")
@_config_option
@_state_option
@handles_errors
def state_show(address: str, serial: int | None, config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None) -> None:
    """Show one ledger entry as JSON (secrets appear only as fingerprints)."""
    backend, _ = _state_backend(config_paths, state_flag, state_name)
    entries = with_history(backend).load_at(serial).resources if serial is not None else dict(reconcile.state_entries(backend))
    if address not in entries:
        at = f" at serial {serial}" if serial is not None else ""
        raise ReconcilerError(f"{address} is not in the ledger at {_where(backend, config_paths, state_flag)}{at}")
    out(json.dumps(entries[address], indent=2, sort_keys=True) + "\n")


@state.command("forget", epilog="\b\nExample:\n  agora-reconciler state forget phone_number/+14155550100 -c infra/agora")
@click.argument("address")
@_config_option
@_state_option
@_lock_timeout_option
@handles_errors
def state_forget(address: str, config_paths: tuple[str, ...], state_flag: str | None, state_name: str | None, lock_timeout: float) -> None:
    """Stop owning ADDRESS without touching the account (it becomes unmanaged)."""
    backend, _ = _state_backend(config_paths, state_flag, state_name)
    reconcile.state_forget(backend, address, lock_timeout=lock_timeout, command="agora-reconciler state forget")
    note(f"Forgot {address}; the account was not changed.")


@state.command(
    "adopt", epilog="\b\nExample:\n  agora-reconciler state adopt agent/lobby-concierge --agent-id 1NT29X10YHxxxxxWJOXLYHNYB -c infra/agora"
)
@click.argument("address")
@click.option("--agent-id", required=True, help="The running agent to own as ADDRESS.")
@_config_option
@_state_option
@_lock_timeout_option
@click.option("--endpoint", help="local, us, eu, ap, cn or an https:// URL (env AGORA_ENDPOINT).")
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
    note(f"Adopted agent {agent_id} as {address}.")


@state.command(
    "history",
    epilog="\b\nExamples:\n  agora-reconciler state history -c infra/agora\n  agora-reconciler state history --prune-before 90 -c infra/agora",
)
@click.option("--prune-before", type=click.FloatRange(0), metavar="DAYS", help="Forget the serials saved more than DAYS days ago.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help="text, or json: one document on stdout."
)
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
        note(f"Pruned {removed} serial(s) saved before {cutoff.replace(microsecond=0).isoformat()} from {backend.location}.")
        return
    entries = history.history()
    if fmt == "json":
        out(json.dumps([vars(e) for e in entries], indent=2) + "\n")
        return
    for e in entries:
        out(f"{e.serial:>6}  {e.saved_at}  {e.saved_by}  {e.command}  {e.changed} changed, {e.resources} entries\n")


@state.command(
    "migrate",
    epilog="\b\nExample:\n  agora-reconciler state migrate --from infra/agora/.agora-reconciler/state.json --to postgresql://agora@db/agora",
)
@click.option("--from", "source", required=True, metavar="STATE", help="The ledger to copy: a file or a postgresql:// URL.")
@click.option("--to", "target", required=True, metavar="STATE", help="Where to: an empty file or PostgreSQL ledger.")
@click.option("--state-name", "state_name", help="The PostgreSQL ledger's name (default: the current folder's name).")
@_lock_timeout_option
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@handles_errors
def state_migrate(source: str, target: str, state_name: str | None, lock_timeout: float, verbose: int) -> None:
    """Copy a ledger to another backend as it is (lineage, serial, entries); the source is kept."""
    setup_logging(verbose, False)
    options = reconcile.resolve_options(None, {"state": source, "state_name": state_name})
    src = reconcile.backend_for(options)
    dst = reconcile.backend_for(reconcile.resolve_options(None, {"state": target, "state_name": state_name}))
    ledger = migrate(src, dst, lock_timeout=lock_timeout, command="agora-reconciler state migrate")
    note(
        f"Migrated serial {ledger.serial} ({len(ledger.resources)} entries) from {src.location} to {dst.location}; the source was not changed."
    )
