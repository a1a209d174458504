"""What every command shares: output streams, error handling, logging, options, sessions.

Owns the output helpers (data on stdout, everything else on stderr, masked on the way out), turning
errors into `Error: ...` and exit codes (`fail`, `handles_errors`), logging set-up, the options
common to the commands that talk to the account, and opening a session (configuration, options,
client; `endpoint: local` serves the emulator in-process).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .. import config
from ..errors import ConfigError, InterruptedApply, LedgerError, ReconcilerError, clip
from ..model import Desired
from ..secrets import RedactingFilter, RedactingFormatter, redact

if TYPE_CHECKING:  # imported where used: `validate` and `--help` load no HTTP stack
    from .. import reconcile
    from ..client import Client

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CHANGES = 2
EXIT_INTERRUPTED = 130
VERBS = {"create": "created", "update": "updated", "replace": "replaced", "delete": "deleted", "restart": "restarted"}
PATHS_HELP = "PATHS are configuration files or folders (a folder's *.yaml/*.yml files are merged); default: agora.yaml."


@dataclass
class OutputMode:
    """Per invocation: `-q` (only errors on stderr). Reset by the group before every command."""

    quiet: bool = False


OUTPUT = OutputMode()


def automation() -> bool:
    """`CI` is set (and not 0/false): no prompts, no colour, no progress bar, no next-step hints."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def set_quiet(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of every command's `-q/--quiet`."""
    if value:
        OUTPUT.quiet = True
        setup_logging(0, True)
    return value


QUIET_HELP = "Only errors on stderr (data on stdout is unaffected)."


# --------------------------------------------------------------------------- output helpers
def out(text: str) -> None:
    """Data on stdout (already free of secrets, masked again on the way out)."""
    click.echo(redact(text), nl=False)


def err(text: str, *, color: bool | None = None) -> None:
    click.echo(redact(text), err=True, color=color)


def note(text: str) -> None:
    """Information on stderr (not an error): silenced by `-q`."""
    if not OUTPUT.quiet:
        err(text)


def hint(text: str) -> None:
    """A next-step hint for a person at a terminal: not with `-q`, not in automation mode (`CI`)."""
    if not automation():
        note(text)


def use_color(no_color: bool, stream: Any = None) -> bool:
    """Colour only on a TTY, and never with --no-color, a non-empty NO_COLOR, TERM=dumb or CI."""
    stream = stream or sys.stdout
    if no_color or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb" or automation():
        return False
    return hasattr(stream, "isatty") and bool(stream.isatty())


def fail(error: ReconcilerError, fmt: str = "text") -> NoReturn:
    if fmt == "json":
        out(json.dumps({"error": {"reason": error.reason, "message": error.message}}, indent=2) + "\n")
    if isinstance(error, ConfigError):
        for d in error.warnings:
            note(f"{d.file}:{d.line}:{d.col}: warning: {d.message}")
    if isinstance(error, LedgerError) and error.dump:
        err("---- the ledger with everything applied so far (save it as the state file) ----")
        err(error.dump.rstrip("\n"))
        err("---- end of ledger ----")
    err(f"Error: {error.message}")
    sys.exit(error.exit_code if isinstance(error, InterruptedApply) else 1)


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
            err(f"Error: internal error ({type(exc).__name__}: {clip(redact(str(exc)), 200)}); run with -v for details and report it")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int, quiet: bool) -> None:
    OUTPUT.quiet = quiet = quiet or OUTPUT.quiet
    level = logging.ERROR if quiet else logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())  # message, traceback and stack masked before formatting
    handler.setFormatter(RedactingFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s")))  # and after
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(max(level, logging.WARNING))


# --------------------------------------------------------------------------- shared options
def _timeout(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    from ..client import parse_timeout

    try:
        return parse_timeout(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


timeout_option = click.option(
    "--timeout",
    callback=_timeout,
    metavar="[CONNECT,]READ",
    help="API timeouts in seconds (default 10,30); reading the account gives up after 3 x READ.",
)


def common_options(fn: F) -> F:
    decorators = [
        click.option("--endpoint", help="local, us, eu, ap, cn or an https:// URL (env AGORA_ENDPOINT)."),
        click.option("--state", "state", help="Ledger file or postgresql:// URL (env AGORA_RECONCILER_STATE; default next to the config)."),
        click.option(
            "--state-name",
            "state_name",
            help="The ledger's name in a PostgreSQL database (env AGORA_RECONCILER_STATE_NAME; default: the config folder's name).",
        ),
        click.option("--target", "targets", multiple=True, metavar="ADDRESS", help="Only this address (glob allowed); repeatable."),
        click.option("--exclude", "excludes", multiple=True, metavar="ADDRESS", help="Skip this address (glob allowed); repeatable."),
        click.option("--parallelism", type=click.IntRange(1, 64), help="Changes applied at once (default 8)."),
        timeout_option,
        click.option("--no-color", is_flag=True, help="No colour (also: a non-empty NO_COLOR, TERM=dumb, CI)."),
        click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug)."),
        click.option("-q", "--quiet", is_flag=True, callback=set_quiet, help=QUIET_HELP),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def load_desired(paths: tuple[str, ...]) -> Desired:
    result = config.check(list(paths))
    for warning in result.warnings:
        note(f"{warning.file}:{warning.line}:{warning.col}: warning: {warning.message}")
    if result.errors or result.desired is None:
        raise ConfigError(result.errors)
    return result.desired


def make_client(options: reconcile.Options, timeout: tuple[float, float] | None = None) -> Client:
    from .. import reconcile
    from ..client import DEFAULT_TIMEOUT, LOCAL_BASE_URL, Client, Credentials, resolve_endpoint
    from ..ledger import is_postgresql

    if options.endpoint.lower() == "local":
        from ..emulator import EmulatorAdapter, EmulatorApp, Store

        folder = Path(reconcile.DEFAULT_STATE).parent if is_postgresql(options.state) else Path(options.state).parent
        data = folder / "local-api.json"
        app = EmulatorApp(Store(data), customer_id="local", customer_secret="local")
        # built-in credentials: not secrets (registering them would mask the word "local")
        return Client(LOCAL_BASE_URL, Credentials.basic("local", "local", secret=False), adapter=EmulatorAdapter(app))
    base = resolve_endpoint(options.endpoint or None)
    return Client(base, Credentials.from_env(), pool_size=max(options.parallelism * 2, 8), timeout=timeout or DEFAULT_TIMEOUT)


def open_session(paths: tuple[str, ...], flags: dict[str, Any]) -> reconcile.Session:
    from .. import reconcile

    desired = load_desired(paths)
    options = reconcile.resolve_options(desired, flags)
    return reconcile.Session.open(desired, make_client(options, flags.get("timeout")), options)


def flags_from(kwargs: dict[str, Any], command: str) -> dict[str, Any]:
    setup_logging(kwargs.get("verbose", 0), kwargs.get("quiet", False))
    keys = ("endpoint", "state", "state_name", "targets", "excludes", "parallelism", "allow_replace", "force", "lock_timeout", "timeout")
    flags = {k: kwargs.get(k) for k in keys}
    flags["command"] = f"agora-reconciler {command}"
    return flags


def add_standard_options(command: click.Command) -> None:
    """Give a command (a group: each of its commands) `-q/--quiet` (only errors), whoever wrote it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_standard_options(sub)
    elif not any(p.name == "quiet" for p in command.params):
        command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=set_quiet, help=QUIET_HELP))
