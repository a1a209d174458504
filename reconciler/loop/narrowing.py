"""What each loop mode applies of a plan: `--mode heal` keeps agent starts, restarts and token
renewals only (DESIGN.md section 10). Pure functions of a change.
"""

from __future__ import annotations

from dataclasses import replace

from ..diff import MINTED, TOKEN_PATH
from ..model import Kind
from ..plan import Action, Change

STARTS = frozenset({Action.CREATE, Action.RESTART, Action.REPLACE})


def is_renewal(change: Change) -> bool:
    return change.action is Action.UPDATE and any(f.path == TOKEN_PATH and f.after == MINTED for f in change.fields)


def heal_part(change: Change) -> Change | None:
    """What `--mode heal` applies of a change: agent starts, restarts and token renewals only."""
    if change.kind != Kind.AGENT.value:
        return None
    if change.action in (Action.CREATE, Action.RESTART):
        return change
    if is_renewal(change):
        token = tuple(f for f in change.fields if f.path == TOKEN_PATH)
        reason = next((part for part in change.reason.split("; ") if part.startswith("token ")), change.reason)
        return replace(change, fields=token, reason=reason)
    return None
