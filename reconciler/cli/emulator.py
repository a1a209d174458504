"""`emulator serve`: the local Agora API emulator over HTTP."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from ..emulator.variants import VARIANTS


@click.group()
def emulator() -> None:
    """The local Agora API emulator."""


@emulator.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=int, show_default=True, help="0 picks a free port.")
@click.option("--data", type=click.Path(dir_okay=False), help="Persist the store in this JSON file.")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False), help="Load this seed document (admin seed format).")
@click.option("--customer-id", help="Accepted customer id (env AGORA_CUSTOMER_ID; default demo).")
@click.option("--customer-secret", help="Accepted customer secret (env AGORA_CUSTOMER_SECRET; default demo).")
@click.option("--stop-delay", type=float, default=None, help="Seconds an agent stays STOPPING after leave (default 0.5).")
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(sorted(VARIANTS)),
    help="Switch on an alternative reading of the API (repeatable; see the README).",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not log each request.")
def emulator_serve(
    host: str,
    port: int,
    data: str | None,
    seed: str | None,
    customer_id: str | None,
    customer_secret: str | None,
    stop_delay: float | None,
    variants: tuple[str, ...],
    quiet: bool,
) -> None:
    """Serve the emulator over HTTP until SIGTERM or Ctrl-C."""
    from ..emulator import EmulatorApp, EmulatorServer, Store

    cid = customer_id or os.environ.get("AGORA_CUSTOMER_ID")
    secret = customer_secret or os.environ.get("AGORA_CUSTOMER_SECRET")
    if not (cid and secret):
        cid, secret = "demo", "demo"
        click.echo("emulator: no credentials given; accepting customer id demo / secret demo", err=True)
    store = Store(data)
    defaults: dict[str, object] = {"variants": list(variants)}
    if stop_delay is not None:
        defaults["stop_delay_s"] = stop_delay
    store.set_defaults(defaults)
    app = EmulatorApp(store, customer_id=cid, customer_secret=secret)
    if seed:
        store.seed(json.loads(Path(seed).read_text()))
    server = EmulatorServer(app, host, port, quiet=quiet).start()
    click.echo(server.url)
    sys.stdout.flush()
    click.echo(f"emulator: serving the Agora API at {server.url}/api/conversational-ai-agent (admin: {server.url}/_emulator/)", err=True)
    if variants:
        click.echo(f"emulator: variants {', '.join(sorted(set(variants)))}", err=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    server.stop()
    click.echo("emulator: stopped", err=True)
