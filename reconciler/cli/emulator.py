"""`emulator serve`: the local Agora API emulator over HTTP."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import click

from ..emulator.variants import VARIANTS


@click.group(epilog="\b\nExample:\n  agora-reconciler emulator serve --port 8080")
def emulator() -> None:
    """The local Agora API emulator (for tests, demos and CI without an account)."""


def _give_up(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _read_seed(path: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as exc:
        _give_up(f"cannot read the seed file {path}: {exc.strerror}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _give_up(f"the seed file {path} is not valid JSON: {exc}")


@emulator.command(
    "serve",
    epilog="""\b
Examples:
  agora-reconciler emulator serve --port 0 --data emulator.json
  AGORA_ENDPOINT=http://127.0.0.1:8080 agora-reconciler plan infra/agora""",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8080, type=int, show_default=True, help="0 picks a free port.")
@click.option("--data", type=click.Path(dir_okay=False), help="Persist the store in this JSON file.")
@click.option("--seed", type=click.Path(dir_okay=False), help="Load this seed document (admin seed format).")
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
@click.option(
    "--app-certificate",
    help="Verify RTC tokens on join and update with this app certificate (env AGORA_APP_CERTIFICATE).",
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr: no request log, no start and stop lines.")
def emulator_serve(
    host: str,
    port: int,
    data: str | None,
    seed: str | None,
    customer_id: str | None,
    customer_secret: str | None,
    stop_delay: float | None,
    variants: tuple[str, ...],
    app_certificate: str | None,
    quiet: bool,
) -> None:
    """Serve the emulator over HTTP until SIGTERM or Ctrl-C."""
    from ..emulator import ApiFault, DataFileError, EmulatorApp, EmulatorServer, Store

    def say(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    cid = customer_id or os.environ.get("AGORA_CUSTOMER_ID")
    secret = customer_secret or os.environ.get("AGORA_CUSTOMER_SECRET")
    if not (cid and secret):
        cid, secret = "demo", "demo"
        click.echo("emulator: no credentials given; accepting customer id demo / secret demo", err=True)  # even with -q
    seed_doc = _read_seed(seed) if seed else None
    defaults: dict[str, object] = {"variants": list(variants)}
    if stop_delay is not None:
        defaults["stop_delay_s"] = stop_delay
    certificate = (app_certificate or os.environ.get("AGORA_APP_CERTIFICATE") or "").strip()
    if certificate:
        defaults["app_certificate"] = certificate
    try:
        store = Store(data, exclusive=True)
    except DataFileError as exc:
        _give_up(str(exc))
    try:
        store.set_defaults(defaults)
        if seed_doc is not None:
            store.seed(seed_doc)
    except ApiFault as exc:
        store.close()
        _give_up(f"{('the seed file ' + str(seed)) if seed else 'emulator settings'}: {exc.message}")
    app = EmulatorApp(store, customer_id=cid, customer_secret=secret)
    try:
        server = EmulatorServer(app, host, port, quiet=quiet).start()
    except OSError as exc:
        store.close()
        _give_up(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    done = threading.Event()  # handlers first: a SIGTERM right after the URL line still stops cleanly
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    click.echo(server.url)
    sys.stdout.flush()
    say(f"emulator: serving the Agora API at {server.url}/api/conversational-ai-agent (admin: {server.url}/_emulator/)")
    if variants:
        say(f"emulator: variants {', '.join(sorted(set(variants)))}")
    if certificate:
        say("emulator: verifying RTC tokens with the app certificate")
    while not done.wait(0.5):
        pass
    server.stop()
    say("emulator: stopped")
