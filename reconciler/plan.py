"""The plan as data: `FieldChange`, `Change`, `Plan` and their JSON form (safety rules: `safety.py`).

A `Plan` is sorted (kind order, then key), carries a summary, the unmanaged resources, adoptions,
warnings, and the digests of what it was made from, so a saved plan can be checked for staleness.
`to_dict()` is exactly `schemas/plan.schema.json` and never holds a secret value: sensitive fields
are already masked when a `FieldChange` is made (in `diff.py`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
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
DECLARATION = "declaration"  # FieldChange.origin: the configuration differs from what was last applied
DRIFT = "drift"  # FieldChange.origin: the API shows something else than right after our last write
ORIGINS = (DECLARATION, DRIFT)
DESTRUCTIVE = frozenset({Action.DELETE, Action.REPLACE})


@dataclass(frozen=True, init=False)
class FieldChange:
    path: str
    before: Any
    after: Any
    sensitive: bool = False
    changed: bool | None = None
    origin: str = DECLARATION  # DECLARATION or DRIFT

    def __init__(
        self, path: str, before: Any, after: Any, sensitive: bool = False, changed: bool | None = None, origin: str = DECLARATION
    ) -> None:
        # What the frozen dataclass's own __init__ does, without one `object.__setattr__` call per
        # field: half the time (a plan of thousands of created numbers makes tens of thousands).
        fields = self.__dict__
        fields["path"] = path
        fields["before"] = before
        fields["after"] = after
        fields["sensitive"] = sensitive
        fields["changed"] = changed
        fields["origin"] = origin

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "before": self.before, "after": self.after, "sensitive": self.sensitive}
        if self.changed is not None:
            out["changed"] = self.changed
        out["origin"] = self.origin
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FieldChange:
        origin = str(doc.get("origin") or DECLARATION)
        return cls(doc["path"], doc.get("before"), doc.get("after"), bool(doc.get("sensitive")), doc.get("changed"), origin)


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

    @property
    def resumes(self) -> bool:
        """A create that finishes an interrupted start or import (journaled as pending) rather than a new one."""
        if self.action is not Action.CREATE or not self.prior:
            return False
        return bool(self.prior.get("pending")) or (self.kind == "agent" and not self.prior.get("agent_id"))

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
    notes: tuple[str, ...] = ()  # worth knowing, not a change (an IDLE agent is alive)
    errors: tuple[str, ...] = ()  # protect violations: the plan cannot be applied at all
    config_digest: str = "sha256:" + "0" * 64
    live_digest: str = "sha256:" + "0" * 64
    ledger_serial: int = 0
    secrets_digest: str = ""  # `Desired.secrets_digest`: a changed secret makes a saved plan stale
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
            **({"secrets_digest": self.secrets_digest} if self.secrets_digest else {}),
            "summary": self.summary(),
            "changes": [c.to_dict() for c in self.changes],
            "unmanaged": [u.to_dict() for u in self.unmanaged],
            "adopted": [str(a) for a in self.adopted],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Plan:
        return cls(
            changes=tuple(Change.from_dict(c) for c in doc["changes"]),
            unchanged=int(doc["summary"].get("unchanged", 0)),
            unmanaged=tuple(Unmanaged(u["kind"], u["key"]) for u in doc["unmanaged"]),
            adopted=tuple(Address.parse(a) for a in doc.get("adopted", [])),
            warnings=tuple(doc.get("warnings", [])),
            notes=tuple(doc.get("notes", [])),
            config_digest=doc["config_digest"],
            live_digest=doc["live_digest"],
            ledger_serial=int(doc["ledger_serial"]),
            secrets_digest=str(doc.get("secrets_digest", "")),
            endpoint=doc["endpoint"],
            created_at=doc["created_at"],
            tool_version=doc["tool_version"],
        )

    def essence(self) -> dict[str, Any]:
        """What must be equal for a saved plan to be applied: the declaration, ledger, changes."""
        return {
            "config_digest": self.config_digest,
            "ledger_serial": self.ledger_serial,
            "secrets_digest": self.secrets_digest,
            "endpoint": self.endpoint,
            "changes": [c.to_dict() for c in self.changes],
        }

    def filtered(self, targets: Sequence[str], excludes: Sequence[str]) -> Plan:
        """Keep only changes whose address matches a `--target` glob and no `--exclude` glob."""
        if not targets and not excludes:
            return self
        kept = tuple(c for c in self.changes if address_selected(str(c.address), targets, excludes))
        return replace(self, changes=kept)


def unmatched_patterns(targets: Sequence[str], excludes: Sequence[str], addresses: Iterable[str]) -> list[str]:
    """`--target X` / `--exclude X` for every pattern that matches none of `addresses`."""
    known = list(addresses)
    return [
        f"{flag} {pattern}"
        for flag, patterns in (("--target", targets), ("--exclude", excludes))
        for pattern in patterns
        if not any(fnmatchcase(address, pattern) for address in known)
    ]


def address_selected(address: str, targets: Sequence[str], excludes: Sequence[str]) -> bool:
    if targets and not any(fnmatchcase(address, t) for t in targets):
        return False
    return not any(fnmatchcase(address, e) for e in excludes)


MAX_LISTED_CHANGES = 20


@dataclass(frozen=True)
class Staleness:
    """Why a saved plan may no longer be applied: what moved, and which changes now differ."""

    moved: tuple[str, ...]
    differing: tuple[str, ...]

    def message(self) -> str:
        text = "the plan is stale: " + "; ".join(self.moved) + ". Run plan again."
        return text + (
            "\nChanges that differ from the saved plan:\n" + listed(self.differing, more="  ... and {n} more differing change(s)")
            if self.differing
            else ""
        )


def staleness(saved: Plan, fresh: Plan) -> Staleness | None:
    """None when the saved plan still matches the fresh one; else what moved (the configuration,
    a secret, the ledger, the endpoint, the account) and which changes differ."""
    if saved.essence() == fresh.essence():
        return None
    moved = []
    if saved.config_digest != fresh.config_digest:
        moved.append("the configuration changed")
    if saved.secrets_digest != fresh.secrets_digest and not saved.secrets_digest:
        moved.append("the plan file records no digest of the secrets (made by an older version)")
    elif saved.secrets_digest != fresh.secrets_digest:
        moved.append("a secret's value changed (the same ${VAR}, a different value)")
    if saved.ledger_serial != fresh.ledger_serial:
        moved.append(f"the ledger moved from serial {saved.ledger_serial} to {fresh.ledger_serial} (another apply or state edit ran)")
    if saved.endpoint != fresh.endpoint:
        moved.append(f"the endpoint changed from {saved.endpoint} to {fresh.endpoint}")
    if saved.live_digest != fresh.live_digest:
        moved.append("the account changed (its live state differs)")
    if not moved:
        moved.append("the plan would now do something else")
    return Staleness(tuple(moved), tuple(_differing_changes(saved, fresh)))


def _differing_changes(saved: Plan, fresh: Plan) -> list[str]:
    before = {str(c.address): c for c in saved.changes}
    after = {str(c.address): c for c in fresh.changes}
    lines = []
    for address in sorted(set(before) | set(after), key=lambda a: Address.parse(a).sort_key()):
        old, new = before.get(address), after.get(address)
        if old is not None and new is not None and old.to_dict() == new.to_dict():
            continue
        if new is None:
            lines.append(f"{address}: planned {old.action.value if old else '?'}, now nothing to do")
        elif old is None:
            lines.append(f"{address}: not in the plan, now {new.action.value} ({new.reason})")
        elif old.action is not new.action:
            lines.append(f"{address}: planned {old.action.value}, now {new.action.value} ({new.reason})")
        else:
            lines.append(f"{address}: {new.action.value} with different details ({new.reason})")
    return lines


MAX_LISTED = MAX_LISTED_CHANGES


def listed(items: Sequence[str], *, limit: int = MAX_LISTED, indent: str = "  - ", more: str = "  - ... and {n} more") -> str:
    """At most `limit` lines, then one counting the rest: for every refusal that lists resources."""
    lines = [f"{indent}{item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(more.format(n=len(items) - limit))
    return "\n".join(lines)
