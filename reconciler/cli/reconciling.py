"""`reconcile`: the long-running loop, its log lines (text or JSON), signals, and the health server."""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from .. import loop as loop_module
from .. import observe, reconcile
from ..errors import ConfigError
from ..loop import Event, Loop
from ..model import Desired, parse_duration
from ..secrets import redact
from .common import EXIT_INTERRUPTED, PATHS_HELP, common_options, flags_from, handles_errors, load_desired, make_client

LEVELS = {"info": 0, "warning": 1, "error": 2}


def format_event(event: Event, fmt: str) -> str:
    """One log line: `TIME LEVEL ADDRESS ACTION OUTCOME: REASON`, or a JSON object; secrets masked."""
    moment = datetime.datetime.fromtimestamp(event.time, datetime.timezone.utc).replace(microsecond=0)
    stamp = moment.isoformat().replace("+00:00", "Z")
    if fmt == "json":
        return redact(json.dumps({"time": stamp, **event.to_dict()}, ensure_ascii=False))
    reason = f": {event.reason}" if event.reason else ""
    return redact(f"{stamp} {event.level.upper():7} {event.address} {event.action} {event.outcome}{reason}")


def _printer(fmt: str, quiet: bool) -> Callable[[Event], None]:
    lock = threading.Lock()

    def emit(event: Event) -> None:
        if quiet and LEVELS.get(event.level, 0) < LEVELS["error"]:
            return
        with lock:
            click.echo(format_event(event, fmt), err=True)

    return emit


def _interval(text: str) -> float:
    seconds = parse_duration(text)
    if seconds is None or seconds < 1:
        raise click.BadParameter(f"{text!r} is not a duration such as 30s, 5m or 1h", param_hint="--interval")
    return float(seconds)


def _install_stop(stop: threading.Event, emit: Callable[[Event], None]) -> Callable[[], None]:
    """SIGTERM and SIGINT: finish the current cycle, save, exit 0. A second one exits at once."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        name = signal.Signals(signum).name
        emit(Event(time.time(), "info", "-", "stop", "requested", f"{name}: finishing the current cycle, then exiting"))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


@click.command(
    "reconcile",
    epilog=f"""{PATHS_HELP}

\b
Examples:
  agora-reconciler reconcile infra/agora --listen 0.0.0.0:9090 --log-format json   # the daemon
  agora-reconciler reconcile infra/agora --once                                    # one cycle, apply's exit codes""",
)
@click.argument("paths", nargs=-1)
@click.option("--interval", default="30s", show_default=True, help="Time between cycles (30s, 5m, 1h).")
@click.option("--once", is_flag=True, help="Run one cycle and exit with apply's exit codes.")
@click.option(
    "--mode",
    type=click.Choice(loop_module.MODES),
    default="heal",
    show_default=True,
    help="heal: restarts, starts of missing agents and token renewals only; full: every change, behind apply's safety gates.",
)
@click.option("--listen", metavar="HOST:PORT", help="Serve GET /healthz and GET /metrics here (e.g. 127.0.0.1:9090).")
@click.option(
    "--log-format",
    "log_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per action on stderr; json: objects with time, level, address, action, outcome, reason.",
)
@click.option("--lock-timeout", type=float, default=0.0, metavar="SECONDS", help="Wait this long for the ledger lock each cycle.")
@common_options
@handles_errors
def reconcile_command(
    paths: tuple[str, ...], interval: str, once: bool, mode: str, listen: str | None, log_format: str, **kwargs: Any
) -> None:
    """Keep declared agents running: plan and apply every interval, with health and metrics."""
    seconds = _interval(interval)
    flags = flags_from(kwargs, "reconcile")
    emit = _printer(log_format, kwargs["quiet"])
    desired = load_desired(paths)
    options = reconcile.resolve_options(desired, flags)
    client = make_client(options)

    def session_for(d: Desired) -> reconcile.Session:
        return reconcile.Session.open(d, client, reconcile.resolve_options(d, flags))

    the_loop = Loop(paths, desired, session_for, interval=seconds, mode=mode, emit=emit)
    server = None
    if listen:
        try:
            server = observe.serve(listen, the_loop)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot serve --listen {listen}: {exc}") from None
        emit(Event(the_loop.clock(), "info", "-", "listen", "serving", f"GET /healthz and /metrics on http://{server.address}"))
    stop = threading.Event()
    restore = _install_stop(stop, emit)
    try:
        if once:
            the_loop.cycle(raise_errors=True)
            return
        emit(Event(the_loop.clock(), "info", "-", "start", "running", f"mode {mode}, a cycle every {interval}"))
        the_loop.run(stop)
        emit(Event(the_loop.clock(), "info", "-", "stop", "done", "the ledger is saved"))
    finally:
        restore()
        the_loop.close()
        if server is not None:
            server.close()
        client.close()
    sys.exit(0)
