"""Use cases: build a plan, apply it (gates, staleness, lock), drift, export, state edits.

Everything a command does besides parsing arguments and printing; knows nothing about click or the
terminal. Owns, by module: `session` (option precedence flag > environment > `settings:` > default,
the ledger backend, `Session`), `planning` (building and filtering a plan, the safety gates, saved
plan files), `applying` (lock, re-plan, staleness, execute, record), `export` (the live account as
a configuration document), `state` (ledger edits). Import the names from here.
"""

from __future__ import annotations

from .applying import MAX_LISTED_FAILURES, ApplyOutcome, apply
from .export import INBOUND_EXPORT_KEYS, OUTBOUND_EXPORT_KEYS, Exported, export_document, sip_password_variable
from .planning import Planned, build_plan, check_gates, load_plan_file
from .session import DEFAULT_PARALLELISM, DEFAULT_STATE, Options, Session, backend_for, default_state_name, resolve_options
from .state import state_adopt_agent, state_entries, state_forget

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
