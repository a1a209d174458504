"""The plan as data: `FieldChange`, `Change`, `Plan`, their JSON form, and the safety rules.

A `Plan` is sorted (kind order, then key), carries a summary, the unmanaged resources, adoptions,
warnings, and the digests of what it was made from, so a saved plan can be checked for staleness.
`to_dict()` is exactly `schemas/plan.schema.json` and never holds a secret value: sensitive fields
are already masked when a `FieldChange` is made (in `diff.py`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

from . import __version__
from .model import KIND_ORDER, Address, Location

FORMAT_VERSION = "1"


class Action(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    RESTART = "restart"


ACTIONS = tuple(a.value for a in Action)
DESTRUCTIVE = frozenset({Action.DELETE, Action.REPLACE})


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any
    sensitive: bool = False
    changed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "before": self.before, "after": self.after, "sensitive": self.sensitive}
        if self.changed is not None:
            out["changed"] = self.changed
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FieldChange:
        return cls(doc["path"], doc.get("before"), doc.get("after"), bool(doc.get("sensitive")), doc.get("changed"))


@dataclass(frozen=True)
class Change:
    address: Address
    action: Action
    reason: str
    disruptive: bool = False
    fields: tuple[FieldChange, ...] = ()
    # Not part of the plan document: what the executor and renderers need.
    location: Location | None = field(default=None, compare=False)
    desired: Any = field(default=None, compare=False, repr=False)  # PhoneNumberSpec | AgentSpec | None
    prior: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)  # ledger entry

    @property
    def kind(self) -> str:
        return self.address.kind

    @property
    def key(self) -> str:
        return self.address.key

    def sort_key(self) -> tuple[int, str]:
        return (KIND_ORDER[self.kind], self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "kind": self.kind,
            "key": self.key,
            "action": self.action.value,
            "reason": self.reason,
            "disruptive": self.disruptive,
            "fields": [f.to_dict() for f in self.fields],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Change:
        return cls(
            address=Address(doc["kind"], doc["key"]),
            action=Action(doc["action"]),
            reason=doc["reason"],
            disruptive=bool(doc["disruptive"]),
            fields=tuple(FieldChange.from_dict(f) for f in doc.get("fields", [])),
        )


@dataclass(frozen=True)
class Unmanaged:
    kind: str
    key: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key}


def created_at_now() -> str:
    """UTC now, or `SOURCE_DATE_EPOCH` when set (reproducible plan files)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else datetime.datetime.now(datetime.timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    unchanged: int = 0
    unmanaged: tuple[Unmanaged, ...] = ()
    adopted: tuple[Address, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # protect violations: the plan cannot be applied at all
    config_digest: str = "sha256:" + "0" * 64
    live_digest: str = "sha256:" + "0" * 64
    ledger_serial: int = 0
    endpoint: str = ""
    created_at: str = field(default_factory=created_at_now)
    tool_version: str = __version__

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes", tuple(sorted(self.changes, key=Change.sort_key)))
        object.__setattr__(self, "unmanaged", tuple(sorted(self.unmanaged, key=lambda u: (KIND_ORDER[u.kind], u.key))))
        object.__setattr__(self, "adopted", tuple(sorted(self.adopted, key=Address.sort_key)))

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def summary(self) -> dict[str, int]:
        out = {a.value: self.count(a) for a in Action}
        out.update(unchanged=self.unchanged, unmanaged=len(self.unmanaged), adopted=len(self.adopted))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "tool_version": self.tool_version,
            "created_at": self.created_at,
            "endpoint": self.endpoint,
            "config_digest": self.config_digest,
            "live_digest": self.live_digest,
            "ledger_serial": self.ledger_serial,
            "summary": self.summary(),
            "changes": [c.to_dict() for c in self.changes],
            "unmanaged": [u.to_dict() for u in self.unmanaged],
            "adopted": [str(a) for a in self.adopted],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Plan:
        return cls(
            changes=tuple(Change.from_dict(c) for c in doc["changes"]),
            unchanged=int(doc["summary"].get("unchanged", 0)),
            unmanaged=tuple(Unmanaged(u["kind"], u["key"]) for u in doc["unmanaged"]),
            adopted=tuple(Address.parse(a) for a in doc.get("adopted", [])),
            warnings=tuple(doc.get("warnings", [])),
            config_digest=doc["config_digest"],
            live_digest=doc["live_digest"],
            ledger_serial=int(doc["ledger_serial"]),
            endpoint=doc["endpoint"],
            created_at=doc["created_at"],
            tool_version=doc["tool_version"],
        )

    def essence(self) -> dict[str, Any]:
        """What must be equal for a saved plan to be applied: the declaration, ledger, changes."""
        return {
            "config_digest": self.config_digest,
            "ledger_serial": self.ledger_serial,
            "endpoint": self.endpoint,
            "changes": [c.to_dict() for c in self.changes],
        }

    def filtered(self, targets: Sequence[str], excludes: Sequence[str]) -> Plan:
        """Keep only changes whose address matches a `--target` glob and no `--exclude` glob."""
        if not targets and not excludes:
            return self
        kept = tuple(c for c in self.changes if address_selected(str(c.address), targets, excludes))
        return replace(self, changes=kept)


def address_selected(address: str, targets: Sequence[str], excludes: Sequence[str]) -> bool:
    if targets and not any(fnmatchcase(address, t) for t in targets):
        return False
    return not any(fnmatchcase(address, e) for e in excludes)


@dataclass(frozen=True)
class SafetyPolicy:
    max_delete_pct: float = 30.0
    min_existing: int = 10


def safety_violations(plan: Plan, owned: Mapping[str, int], declared: Mapping[str, int], policy: SafetyPolicy) -> list[str]:
    """Why this plan is unsafe (empty when it is safe). `owned`/`declared`: kind -> count."""
    problems = []
    for kind, label in (("phone_number", "phone numbers"), ("agent", "agents")):
        total = owned.get(kind, 0)
        # a delete that only drops the ledger entry of something already gone touches nothing
        destructive = sum(1 for c in plan.changes if c.kind == kind and c.action in DESTRUCTIVE and c.disruptive)
        if destructive == 0:
            continue
        if declared.get(kind, 0) == 0 and destructive >= total > 0:
            problems.append(
                f"the configuration declares no {label} and the plan deletes all {total} owned ones (an empty or truncated file?)"
            )
            continue
        if total < policy.min_existing:
            continue
        share = 100.0 * destructive / total
        if share > policy.max_delete_pct:
            problems.append(
                f"the plan deletes or replaces {destructive} of {total} owned {label} ({share:.0f}% > max_delete_pct {policy.max_delete_pct:g}%)"
            )
    return problems
