"""The outcome of one diff: its changes, what was left alone, adopted or found unmanaged, and its
errors, warnings and notes. Plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import (
    Address,
)
from ..plan import Change, Unmanaged


@dataclass
class DiffResult:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    unmanaged: list[Unmanaged] = field(default_factory=list)
    adopted: list[Address] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resolved: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # pending starts found alive: address -> entry
