"""Desired x Live x Ledger -> the changes of a plan, each with its reason and field diffs.

Owns the decisions of DESIGN.md section 3: what is created, updated in place, replaced,
deleted, restarted, adopted or left alone, and why. A package split along its seams; this module
holds `diff()` and re-exports the public names, so `reconciler.diff` is imported as before:

* `fields`: essences (defaults filled in, server-owned fields removed; secrets as salted
  fingerprints) and the field diffs between them, secrets masked; the only module that imports
  `deepdiff`;
* `numbers`: the decisions for phone numbers;
* `agents`: the decisions for agents (and minted-token renewal);
* `declared`: what is worked out from the declaration alone, and `DeclaredForms`, which keeps it
  between plans of one declaration (the reconcile loop);
* `result`: `DiffResult`, what one diff found.
"""

from __future__ import annotations

import time

from ..ledger import Ledger
from ..model import Desired, Live
from .agents import _diff_agents, format_seconds
from .declared import DeclaredForms
from .fields import MINTED, TOKEN_PATH, applied_agent_essence, applied_phone_essence, created_fields, field_changes, fingerprint_secrets
from .numbers import _diff_numbers, observed_legacy, upgraded_phone_entry
from .result import DiffResult

__all__ = [
    "MINTED",
    "TOKEN_PATH",
    "DeclaredForms",
    "DiffResult",
    "applied_agent_essence",
    "applied_phone_essence",
    "created_fields",
    "diff",
    "field_changes",
    "fingerprint_secrets",
    "format_seconds",
    "observed_legacy",
    "upgraded_phone_entry",
]


def diff(
    desired: Desired, live: Live, ledger: Ledger, *, prune: bool = False, now: float | None = None, cache: DeclaredForms | None = None
) -> DiffResult:
    """`now` (epoch seconds, default the system clock) decides which minted tokens are due for renewal.
    `cache` keeps the declared side between plans of the same declaration (the reconcile loop)."""
    if cache is not None:
        cache.bind(desired, ledger.salt)
    out = DiffResult()
    now = time.time() if now is None else now
    _diff_numbers(desired, live, ledger, prune, out, cache, now)
    _diff_agents(desired, live, ledger, out, now, cache)
    return out
