"""Use cases: build a plan, apply it (gates, staleness, lock), drift, export, state edits.

Everything a command does besides parsing arguments and printing; knows nothing about click or the
terminal. Owns, by module: `session` (option precedence flag > environment > `settings:` > default,
the ledger backend, `Session`), `planning` (building and filtering a plan, the safety gates, saved
plan files), `applying` (lock, re-plan, staleness, execute, record), `export` (the live account as
a configuration document), `state` (ledger edits). Import the names from here: those of `applying`,
`export` and `state` are imported on first use (a plan never loads the executor, the journal or
the export).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .planning import Planned, build_plan, check_gates, load_plan_file
from .session import DEFAULT_PARALLELISM, DEFAULT_STATE, Options, Session, backend_for, default_state_name, resolve_options

if TYPE_CHECKING:
    from .applying import MAX_LISTED_FAILURES, ApplyOutcome, apply
    from .export import INBOUND_EXPORT_KEYS, OUTBOUND_EXPORT_KEYS, Exported, export_document, sip_password_variable
    from .state import state_adopt_agent, state_entries, state_forget

_LAZY = {
    **dict.fromkeys(("MAX_LISTED_FAILURES", "ApplyOutcome", "apply"), "applying"),
    **dict.fromkeys(("INBOUND_EXPORT_KEYS", "OUTBOUND_EXPORT_KEYS", "Exported", "export_document", "sip_password_variable"), "export"),
    **dict.fromkeys(("state_adopt_agent", "state_entries", "state_forget"), "state"),
}


def __getattr__(name: str) -> Any:
    """The names of `applying`, `export` and `state`, importing their module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_PARALLELISM",
    "DEFAULT_STATE",
    "INBOUND_EXPORT_KEYS",
    "MAX_LISTED_FAILURES",
    "OUTBOUND_EXPORT_KEYS",
    "ApplyOutcome",
    "Exported",
    "Options",
    "Planned",
    "Session",
    "apply",
    "backend_for",
    "build_plan",
    "check_gates",
    "default_state_name",
    "export_document",
    "load_plan_file",
    "resolve_options",
    "sip_password_variable",
    "state_adopt_agent",
    "state_entries",
    "state_forget",
]
