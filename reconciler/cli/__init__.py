"""The command line: click commands, output streams, colours, prompts, exit codes.

The only package that prints or exits, and the only one besides tests that imports the emulator
(for `endpoint: local` and `emulator serve`). Data (plans, JSON, YAML) goes to stdout; progress,
logs, warnings and errors go to stderr. Exit codes: 0 success / no changes, 1 any error (usage
errors included), 2 changes pending or drift found (`--detailed-exitcode`, `drift`), 130 Ctrl-C.

This module holds the group (`cli`) and `main`; `common` the shared helpers; the other modules
the commands, by group: `validate` (validate, schema), `planning` (plan, drift, apply), `export`,
`graph`, `state` (state ...), `emulator` (emulator serve), `reconciling` (reconcile, the loop). A command's module is imported only when that
command runs (`--help` lists them from `COMMANDS`), so `validate` and `--help` never import the HTTP
stack or the emulator.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .. import __version__
from ..memory import pause_for_startup, startup_done
from .common import OUTPUT, add_standard_options, err

__all__ = ["COMMANDS", "Group", "cli", "main"]

# name -> (module in this package, attribute, its help's first sentence: `--help` shows it without importing)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "apply": ("planning", "apply", "Make the account match the configuration."),
    "drift": ("planning", "drift", "Check the account for drift (read-only): exit 0 in sync, 2 on drift, 1 on error."),
    "emulator": ("emulator", "emulator", "The local Agora API emulator (for tests, demos and CI without an account)."),
    "export": ("export", "export", "Print the live phone numbers as a configuration document ready to commit."),
    "graph": ("graph", "graph", "Draw the wiring as declared and as live (reads the account, writes nothing)."),
    "plan": ("planning", "plan", "Show what apply would change (reads the account, writes nothing)."),
    "reconcile": (
        "reconciling",
        "reconcile_command",
        "Keep declared agents running: plan and apply every interval, with health and metrics.",
    ),
    "schema": ("validate", "schema", "Print a JSON Schema on stdout (the configuration document's by default)."),
    "state": ("state", "state", "Inspect and edit the ledger (what the tool owns and last applied)."),
    "validate": ("validate", "validate", "Check the configuration without network access: exit 0 valid, 1 invalid."),
}


class Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute, _ = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            add_standard_options(command)
            self.add_command(command, cmd_name)
        startup_done()  # the command's module is imported: the collector resumes (reconciler/memory.py)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, from `COMMANDS` for the commands not imported (truncated the same way)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:
                rows.append((name, click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit)))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # usage errors exit 1, not click's 2
        OUTPUT.quiet = False
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


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""Commands that read configuration take PATHS: files or folders (a folder's *.yaml/*.yml files
are merged); default agora.yaml. With CI set: no prompts, no colour, no progress bar, no hints.

\b
Example:
  agora-reconciler validate infra/agora && agora-reconciler plan infra/agora""",
)
@click.version_option(__version__, prog_name="agora-reconciler", help="Show the version and exit.")
def cli() -> None:
    """Declarative phone numbers and long-running agents for Agora Conversational AI."""


def main() -> None:
    pause_for_startup()  # resumed once the command's module is imported (reconciler/memory.py), or on the way out
    try:
        code = cli.main(prog_name="agora-reconciler")
    finally:
        startup_done()
    sys.exit(code if isinstance(code, int) else 0)
