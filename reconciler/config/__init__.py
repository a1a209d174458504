"""YAML -> `Desired`: loading, interpolation, schema and semantic validation, with positions.

Owns everything about reading the declaration (DESIGN.md section 2), in these modules:
- `reader`: composes YAML from parser events (the C parser when available) into plain values, so
  every value keeps its `file:line:col`, duplicate keys are caught, and alias expansion is bounded;
- `interpolation`: `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and `$$`, marking the results
  sensitive (they are shown as `${VAR}`);
- `schema`: validation against `schemas/` (compiled once) and its error messages;
- `semantics`: the rules a schema cannot say (uniqueness, CIDRs, literal-secret warnings);
- `assembly`: `check`, `load` and `parse_document`, which report every problem of a run
  together, sorted, each with a position and a hint, and build the specs.
The only package that imports `yaml` and `jsonschema`.
"""

from __future__ import annotations

from .assembly import LoadResult, check, load, parse_document
from .discovery import discover
from .reader import DEFAULT_PATH, MAX_ALIAS_EXPANSION, MAX_DEPTH, dotted, parse_text
from .schema import (
    _validator,
    bundled_schema,
    fast_is_valid,
    ledger_checks,
    load_schema,
    schema_dir,
    schema_names,
    validate_ledger_document,
    validate_plan_document,
)
from .writer import dump_document

__all__ = [
    "DEFAULT_PATH",
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "LoadResult",
    "_validator",
    "bundled_schema",
    "check",
    "discover",
    "dotted",
    "dump_document",
    "fast_is_valid",
    "ledger_checks",
    "load",
    "load_schema",
    "parse_document",
    "parse_text",
    "schema_dir",
    "schema_names",
    "validate_ledger_document",
    "validate_plan_document",
]
