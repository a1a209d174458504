"""The command line: click commands, output streams, colours, prompts, exit codes.

The only module that prints or exits, and the only one besides tests that imports the emulator
(for `endpoint: local` and `emulator serve`). Data (plans, JSON, YAML) goes to stdout; progress,
logs, warnings and errors go to stderr. Exit codes: 0 success / no changes, 1 any error (usage
errors included), 2 changes pending or drift found (`--detailed-exitcode`, `drift`), 130 Ctrl-C.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import __version__, config, reconcile, render
from .client import LOCAL_BASE_URL, Client, Credentials, resolve_endpoint
from .errors import ApprovalError, ConfigError, InterruptedApply, LedgerError, ReconcilerError
from .executor import ChangeResult
from .model import Desired
from .plan import Plan
from .secrets import RedactingFilter, redact

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CHANGES = 2
EXIT_INTERRUPTED = 130
VERBS = {"create": "created", "update": "updated", "replace": "replaced", "delete": "deleted", "restart": "restarted"}


# --------------------------------------------------------------------------- output helpers
def out(text: str) -> None:
    """Data on stdout (already free of secrets, masked again on the way out)."""
    click.echo(redact(text), nl=False)


def err(text: str, *, color: bool | None = None) -> None:
    click.echo(redact(text), err=True, color=color)


def use_color(no_color: bool, stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return not no_color and "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def fail(error: ReconcilerError, fmt: str = "text") -> NoReturn:
    if fmt == "json":
        out(json.dumps({"error": {"reason": error.reason, "message": error.message}}, indent=2) + "\n")
    if isinstance(error, ConfigError):
        for d in error.warnings:
            err(f"{d.file}:{d.line}:{d.col}: warning: {d.message}")
    if isinstance(error, LedgerError) and error.dump:
        err("---- the ledger with everything applied so far (save it as the state file) ----")
        err(error.dump.rstrip("\n"))
        err("---- end of ledger ----")
    err(f"Error: {error.message}")
    sys.exit(EXIT_INTERRUPTED if isinstance(error, InterruptedApply) else 1)


def handles_errors(fn: F) -> F:
    """Turn our errors into `Error: ...` (or JSON) and exit 1; anything else is an internal error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fmt = kwargs.get("fmt", "text")
        try:
            return fn(*args, **kwargs)
        except ReconcilerError as exc:
            fail(exc, fmt)
        except KeyboardInterrupt:
            err("Interrupted.")
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: masked, no secret in a traceback
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                err(redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
            err(f"Error: internal error ({type(exc).__name__}: {redact(str(exc))[:200]}); run with -v for details and report it")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(max(level, logging.WARNING))


# --------------------------------------------------------------------------- shared options
def common_options(fn: F) -> F:
    decorators = [
        click.option("--endpoint", help="local, us, eu, ap, cn or an https:// URL (env AGORA_ENDPOINT)."),
        click.option("--state", "state", help="Ledger file (env AGORA_RECONCILER_STATE; default next to the config)."),
        click.option("--target", "targets", multiple=True, metavar="ADDRESS", help="Only this address (glob allowed); repeatable."),
        click.option("--exclude", "excludes", multiple=True, metavar="ADDRESS", help="Skip this address (glob allowed); repeatable."),
        click.option("--parallelism", type=click.IntRange(1, 64), help="Changes applied at once (default 8)."),
        click.option("--no-color", is_flag=True, help="No colour (also: NO_COLOR)."),
        click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug)."),
        click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def load_desired(paths: tuple[str, ...]) -> Desired:
    result = config.check(list(paths))
    for warning in result.warnings:
        err(f"{warning.file}:{warning.line}:{warning.col}: warning: {warning.message}")
    if result.errors or result.desired is None:
        raise ConfigError(result.errors)
    return result.desired


def make_client(options: reconcile.Options) -> Client:
    if options.endpoint.lower() == "local":
        from .emulator import EmulatorAdapter, EmulatorApp, Store

        data = Path(options.state).parent / "local-api.json"
        app = EmulatorApp(Store(data), customer_id="local", customer_secret="local")
        return Client(LOCAL_BASE_URL, Credentials.basic("local", "local"), adapter=EmulatorAdapter(app))
    base = resolve_endpoint(options.endpoint or None)
    return Client(base, Credentials.from_env(), pool_size=max(options.parallelism * 2, 8))


def open_session(paths: tuple[str, ...], flags: dict[str, Any]) -> reconcile.Session:
    desired = load_desired(paths)
    options = reconcile.resolve_options(desired, flags)
    return reconcile.Session.open(desired, make_client(options), options)


def flags_from(kwargs: dict[str, Any], command: str) -> dict[str, Any]:
    setup_logging(kwargs.get("verbose", 0), kwargs.get("quiet", False))
    keys = ("endpoint", "state", "targets", "excludes", "parallelism", "allow_replace", "force", "lock_timeout")
    flags = {k: kwargs.get(k) for k in keys}
    flags["command"] = f"agora-reconciler {command}"
    return flags


# --------------------------------------------------------------------------- the group
class Group(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:  # usage errors exit 1, not click's 2
        try:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.Abort:
            err("Aborted.")
            sys.exit(1)
        except click.UsageError as exc:
            exc.show()
            sys.exit(1)
        except click.ClickException as exc:
            exc.show()
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agora-reconciler")
def cli() -> None:
    """Declarative phone numbers and long-running agents for Agora Conversational AI."""


def main() -> None:
    code = cli.main(prog_name="agora-reconciler")
    sys.exit(code if isinstance(code, int) else 0)


# --------------------------------------------------------------------------- validate / schema
@cli.command()
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True)
@click.option("--no-color", is_flag=True, hidden=True)
@handles_errors
def validate(paths: tuple[str, ...], fmt: str, no_color: bool) -> None:
    """Check the configuration (no network). Exit 0 valid, 1 invalid."""
    result = config.check(list(paths))
    if fmt == "json":
        out(render.diagnostics_json(result.errors, result.warnings))
    elif fmt == "github":
        out(render.diagnostics_github(result.errors, result.warnings))
    else:
        text = render.diagnostics_text(result.errors, result.warnings)
        if text:
            err(text.rstrip("\n"))
        if not result.errors and result.desired is not None:
            d = result.desired
            err(f"Valid: {len(d.phone_numbers)} phone number(s), {len(d.agents)} agent(s) in {len(d.files)} file(s).")
        else:
            err(f"Invalid: {len(result.errors)} error(s).")
    if result.errors:
        sys.exit(1)


@cli.command()
@click.option("--name", type=click.Choice(["config", "phone_number", "agent", "plan"]), default="config", show_default=True)
def schema(name: str) -> None:
    """Print a JSON Schema (the configuration's by default)."""
    out(json.dumps(config.load_schema(name), indent=2) + "\n")


# --------------------------------------------------------------------------- plan / drift
def _print_plan(plan: Plan, fmt: str, color: bool) -> None:
    if fmt == "json":
        out(render.render_json(plan))
    elif fmt == "markdown":
        out(render.render_markdown(plan))
    elif fmt == "github":
        out(render.render_github(plan))
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(redact(render.render_markdown(plan)))
    else:
        out(render.render_text(plan, color=color))


@cli.command()
@click.argument("paths", nargs=-1)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write the JSON plan here, for apply --plan.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes.")
@common_options
@handles_errors
def plan(paths: tuple[str, ...], out_file: str | None, fmt: str, detailed_exitcode: bool, **kwargs: Any) -> None:
    """Show what apply would change."""
    session = open_session(paths, flags_from(kwargs, "plan"))
    planned = reconcile.build_plan(session)
    _print_plan(planned.plan, fmt, use_color(kwargs["no_color"]))
    if out_file:
        Path(out_file).write_text(render.render_json(planned.plan))
        where = " ".join(paths) + " " if paths else ""
        err(f"Saved the plan to {out_file}. Apply it with: agora-reconciler apply {where}--plan {out_file}")
    if planned.plan.errors:
        sys.exit(1)
    if detailed_exitcode and planned.plan.has_changes:
        sys.exit(EXIT_CHANGES)


@cli.command()
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown", "github"]), default="text", show_default=True)
@common_options
@handles_errors
def drift(paths: tuple[str, ...], fmt: str, **kwargs: Any) -> None:
    """Read-only check: exit 0 in sync, 2 on drift, 1 on error."""
    session = open_session(paths, flags_from(kwargs, "drift"))
    planned = reconcile.build_plan(session)
    _print_plan(planned.plan, fmt, use_color(kwargs["no_color"]))
    if planned.plan.has_changes:
        sys.exit(EXIT_CHANGES)


# --------------------------------------------------------------------------- apply
class _Progress:
    """One line per completed change on stderr, or a progress bar on a TTY."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.bar: Any = None

    def start(self, plan: Plan) -> None:
        if self.tty and len(plan.changes) > 1:
            self.bar = click.progressbar(length=len(plan.changes), label="Applying", file=sys.stderr)
            self.bar.__enter__()

    def __call__(self, result: ChangeResult) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if not result.ok and not result.skipped:
                err(f"\n{result.change.address}: failed: {result.error}")
            return
        if self.quiet:
            return
        if result.ok:
            err(f"{result.change.address}: {VERBS[result.change.action.value]}")
        elif not result.skipped:
            err(f"{result.change.address}: failed: {result.error}")

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _install_interrupt(stop: threading.Event) -> Callable[[], None]:
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        err("Interrupted: finishing the changes in flight and saving the ledger (Ctrl-C again to quit at once)...")

    previous = signal.signal(signal.SIGINT, handler)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


@cli.command()
@click.argument("paths", nargs=-1)
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), help="Apply this saved plan (refused when stale).")
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--allow-replace", is_flag=True, default=None, help="Allow delete + re-import of phone numbers.")
@click.option("--force", is_flag=True, help="Apply a plan that the safety thresholds refuse.")
@click.option("--lock-timeout", type=float, default=0.0, metavar="SECONDS", help="Wait this long for the ledger lock.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@common_options
@handles_errors
def apply(paths: tuple[str, ...], plan_file: str | None, auto_approve: bool, fmt: str, **kwargs: Any) -> None:
    """Make the account match the configuration."""
    flags = flags_from(kwargs, "apply")
    saved = reconcile.load_plan_file(plan_file, config.validate_plan_document) if plan_file else None
    session = open_session(paths, flags)
    color = use_color(kwargs["no_color"])
    progress = _Progress(kwargs["quiet"])

    def show(plan: Plan) -> None:
        if fmt == "json":
            return
        if plan.has_changes or not kwargs["quiet"]:
            out(render.render_text(plan, color=color))
        progress.start(plan) if plan.has_changes and (auto_approve or saved is not None) else None

    def confirm(plan: Plan) -> bool:
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            raise ApprovalError("no terminal to confirm on: pass --auto-approve, or apply a saved plan with --plan")
        answer = click.confirm(f"Apply these {len(plan.changes)} changes?", default=False, err=True)
        if answer:
            progress.start(plan)
        return answer

    stop = threading.Event()
    restore = _install_interrupt(stop)
    try:
        outcome = reconcile.apply(session, saved=saved, confirm=confirm, on_plan=show, on_result=progress, stop=stop)
    finally:
        progress.finish()
        restore()
    counts = outcome.counts()
    if fmt == "json":
        out(json.dumps({"applied": counts, "adopted": outcome.adopted, "plan": outcome.plan.to_dict()}, indent=2) + "\n")
    if not outcome.plan.has_changes:
        err("Nothing to apply." + (f" Recorded {outcome.adopted} adopted resource(s) in the ledger." if outcome.adopted else ""))
        return
    parts = [f"{n} {VERBS[a]}" for a, n in counts.items()]
    err(f"Apply complete: {', '.join(parts) or 'nothing changed'}.")


# --------------------------------------------------------------------------- export / state
@cli.command()
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


@cli.group()
def state() -> None:
    """Inspect and edit the ledger."""


def _state_backend(config_paths: tuple[str, ...], state_flag: str | None) -> tuple[Any, reconcile.Options]:
    desired = None
    if config_paths or Path(config.DEFAULT_PATH).exists():
        desired = load_desired(config_paths)
    options = reconcile.resolve_options(desired, {"state": state_flag})
    from .ledger import open_backend

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


# --------------------------------------------------------------------------- emulator
@cli.group()
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
@click.option("-q", "--quiet", is_flag=True, help="Do not log each request.")
def emulator_serve(
    host: str,
    port: int,
    data: str | None,
    seed: str | None,
    customer_id: str | None,
    customer_secret: str | None,
    stop_delay: float | None,
    quiet: bool,
) -> None:
    """Serve the emulator over HTTP until SIGTERM or Ctrl-C."""
    from .emulator import EmulatorApp, EmulatorServer, Store

    cid = customer_id or os.environ.get("AGORA_CUSTOMER_ID")
    secret = customer_secret or os.environ.get("AGORA_CUSTOMER_SECRET")
    if not (cid and secret):
        cid, secret = "demo", "demo"
        click.echo("emulator: no credentials given; accepting customer id demo / secret demo", err=True)
    store = Store(data)
    if stop_delay is not None:
        store.settings.stop_delay_s = stop_delay
    app = EmulatorApp(store, customer_id=cid, customer_secret=secret)
    if seed:
        store.seed(json.loads(Path(seed).read_text()))
    server = EmulatorServer(app, host, port, quiet=quiet).start()
    click.echo(server.url)
    sys.stdout.flush()
    click.echo(f"emulator: serving the Agora API at {server.url}/api/conversational-ai-agent (admin: {server.url}/_emulator/)", err=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    server.stop()
    click.echo("emulator: stopped", err=True)


if __name__ == "__main__":
    main()
