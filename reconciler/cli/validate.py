"""`validate` and `schema`: the commands that need no account."""

from __future__ import annotations

import json
import sys

import click

from .. import config, render
from .common import (
    err,
    handles_errors,
    out,
)


@click.command()
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


@click.command()
@click.option("--name", type=click.Choice(["config", "phone_number", "agent", "plan", "ledger"]), default="config", show_default=True)
def schema(name: str) -> None:
    """Print a JSON Schema (the configuration's by default)."""
    out(json.dumps(config.load_schema(name), indent=2) + "\n")
