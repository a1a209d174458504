"""`validate` and `schema`: the commands that need no account."""

from __future__ import annotations

import json
import sys

import click

from .. import config, render
from .common import (
    PATHS_HELP,
    err,
    handles_errors,
    note,
    out,
)


@click.command(
    epilog=f"""{PATHS_HELP}

\b
Examples:
  agora-reconciler validate infra/agora
  agora-reconciler validate infra/agora --format github   # annotations in a pull request"""
)
@click.argument("paths", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text (file:line:col: ... on stderr), json on stdout, or github (::error annotations).",
)
@click.option("--no-color", is_flag=True, hidden=True)
@handles_errors
def validate(paths: tuple[str, ...], fmt: str, no_color: bool) -> None:
    """Check the configuration without network access: exit 0 valid, 1 invalid."""
    result = config.check(list(paths))
    if fmt == "json":
        out(render.diagnostics_json(result.errors, result.warnings))
    elif fmt == "github":
        out(render.diagnostics_github(result.errors, result.warnings))
    else:
        errors = render.diagnostics_text(result.errors, [])
        warnings = render.diagnostics_text([], result.warnings)
        if warnings:
            note(warnings.rstrip("\n"))
        if errors:
            err(errors.rstrip("\n"))
        if not result.errors and result.desired is not None:
            d = result.desired
            note(f"Valid: {len(d.phone_numbers)} phone number(s), {len(d.agents)} agent(s) in {len(d.files)} file(s).")
        else:
            err(f"Invalid: {len(result.errors)} error(s).")
    if result.errors:
        sys.exit(1)


@click.command(
    epilog="""Every schema printed is self-contained (the schemas it references are bundled under $defs),
so editors and check-jsonschema need no other file and no network.

\b
Examples:
  agora-reconciler schema > agora.schema.json
  check-jsonschema --schemafile agora.schema.json infra/agora/*.yaml"""
)
@click.option(
    "--name",
    type=click.Choice(config.schema_names()),
    default="config",
    show_default=True,
    help="config: the YAML document; phone_number, agent: one entry; plan: a saved plan (plan --out); ledger: the ledger file.",
)
def schema(name: str) -> None:
    """Print a JSON Schema on stdout (the configuration document's by default)."""
    click.echo(json.dumps(config.bundled_schema(name), indent=2))  # shipped text, no secret: not masked
