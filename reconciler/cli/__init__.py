"""The command line: click commands, output streams, colours, prompts, exit codes.

The only package that prints or exits, and the only one besides tests that imports the emulator
(for `endpoint: local` and `emulator serve`). Data (plans, JSON, YAML) goes to stdout; progress,
logs, warnings and errors go to stderr. Exit codes: 0 success / no changes, 1 any error (usage
errors included), 2 changes pending or drift found (`--detailed-exitcode`, `drift`), 130 Ctrl-C.

This module holds the group (`cli`) and `main`; `common` the shared helpers; the other modules
the commands, by group: `validate` (validate, schema), `planning` (plan, drift, apply), `export`,
`state` (state ...), `emulator` (emulator serve).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from . import emulator, export, planning, state, validate
from .common import err

__all__ = ["Group", "cli", "main"]


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


for _command in (
    validate.validate,
    validate.schema,
    planning.plan,
    planning.drift,
    planning.apply,
    export.export,
    state.state,
    emulator.emulator,
):
    cli.add_command(_command)
