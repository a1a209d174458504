"""Fault rules of the admin API (`POST /_emulator/faults`): which calls fail, slow down, drop or wait.

A `hold` rule parks every matching call (at most `count` of them when given) until
`POST /_emulator/faults/release`; `GET /_emulator/faults/held` says how many are parked, so a test
waits on that number instead of a clock.

A rule is validated completely when it is installed (types, ranges, the path regex), so a bad
rule is a 400 and never a surprise in the middle of a test. `EmulatorApp` picks and applies them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .records import ApiFault


@dataclass
class Fault:
    """One rule from `POST /_emulator/faults`."""

    method: str | None = None
    path: re.Pattern[str] | None = None
    status: int | None = None
    count: int | None = None
    retry_after: float | None = None
    latency_ms: float = 0
    drop: bool = False
    rate: float | None = None
    body: Any = None  # answer with this JSON (and `status`, default 200) instead of executing
    echo_body: bool = False  # the error description repeats the request body (as some APIs do)
    hold: bool = False  # park the call until `POST /_emulator/faults/release`, then execute it

    @classmethod
    def parse(cls, doc: Any) -> Fault:
        if not isinstance(doc, dict):
            raise ApiFault(400, "invalid_request_body", "a fault is a JSON object")
        known = {"method", "path", "status", "count", "retry_after", "latency_ms", "drop", "rate", "body", "echo_body", "hold"}
        unknown = set(doc) - known
        if unknown:
            raise ApiFault(400, "invalid_field", f"unknown fault field(s): {', '.join(sorted(unknown))}")
        method, path = typed(doc, "method", str), typed(doc, "path", str)
        try:
            pattern = re.compile(path) if path else None
        except re.error as exc:
            raise ApiFault(400, "invalid_field", f"path is not a valid regular expression: {exc}") from None
        status = typed(doc, "status", int)
        if status is not None and not 100 <= status <= 599:
            raise ApiFault(400, "invalid_field", "status must be an HTTP status code (100-599)")
        count = typed(doc, "count", int)
        if count is not None and count < 0:
            raise ApiFault(400, "invalid_field", "count must not be negative")
        rate = number(doc, "rate")
        if rate is not None and not 0 <= rate <= 1:
            raise ApiFault(400, "invalid_field", "rate must be between 0 and 1")
        fault = cls(
            method=(method or "").upper() or None,
            path=pattern,
            status=status,
            count=count,
            retry_after=number(doc, "retry_after"),
            latency_ms=number(doc, "latency_ms") or 0.0,
            drop=bool(typed(doc, "drop", bool)),
            rate=rate,
            body=doc.get("body"),
            echo_body=bool(typed(doc, "echo_body", bool)),
            hold=bool(typed(doc, "hold", bool)),
        )
        if fault.hold and (fault.status or fault.drop or fault.body is not None or fault.rate is not None):
            raise ApiFault(400, "invalid_field", "a hold fault only takes method, path, count and latency_ms")
        if fault.rate is not None and fault.status is None:
            raise ApiFault(400, "invalid_field", "a rate fault needs a status")
        if fault.count is None and fault.rate is None and (fault.status or fault.drop or fault.body is not None):
            fault.count = 1
        return fault

    @property
    def is_global_latency(self) -> bool:
        return self.count is None and self.rate is None and not self.status and not self.drop and self.body is None and not self.hold

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return not (self.path and not self.path.search(path))


def typed(doc: dict[str, Any], key: str, kind: type) -> Any:
    """`doc[key]` if it has the type `kind` (bool is not an int here), None if absent, else a 400."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiFault(400, "invalid_field", f"{key} must be {'an' if kind is int else 'a'} {kind.__name__}")
    return value


def number(doc: dict[str, Any], key: str) -> float | None:
    """`doc[key]` as a finite, non-negative number, None if absent, else a 400."""
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ApiFault(400, "invalid_field", f"{key} must be a non-negative number")
    return float(value)
