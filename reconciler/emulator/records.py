"""The emulator's records and vocabulary: constants, the error type, settings, agents and calls.

Plain data shared by the store's parts (`state.py`, `agents.py`, `telephony.py`, `store.py`);
no rules live here beyond validating a setting.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from . import variants as v

# Identifiers are always matched with `fullmatch`: `$` would accept a trailing newline.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
NAME = re.compile(r"[^\x00-\x1f\x7f]{1,255}")  # agent names and user accounts: no control characters
CHANNEL = re.compile(r"[A-Za-z0-9 !#$%&()+\-:;<=.>?@\[\]^_{|}~,]{1,64}")  # Agora's channel-name rule
STATUS_CODES = {
    "IDLE": 0,
    "STARTING": 1,
    "RUNNING": 2,
    "STOPPING": 3,
    "STOPPED": 4,
    "RECOVERING": 5,
    "FAILED": 6,
}
LIVE_STATUSES = ("STARTING", "RUNNING", "RECOVERING")
MAX_RUNTIME_S = 72 * 3600
DEFAULT_IDLE_TIMEOUT_S = 30
DEMO_PIPELINES = {"pl_demo_support": "Support desk", "pl_demo_sales": "Sales line"}
REQUIRED_PROPERTIES = ("channel", "token", "agent_rtc_uid", "remote_rtc_uids")
UPDATABLE = {"token": None, "llm": {"system_messages", "params"}, "mllm": {"params"}}
_ID_ALPHABET = string.ascii_uppercase + string.digits


class ApiFault(Exception):
    """An API error: the HTTP status plus a code and a message; `app.py` picks the body shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Settings:
    """Tunable behaviour (admin `POST /_emulator/config`, `emulator serve` options)."""

    stop_delay_s: float = 0.5
    start_delay_s: float = 0.0
    retention_s: float = 7 * 24 * 3600
    name_reuse: str = "strict"  # strict: any earlier name conflicts; lenient: only live ones
    variants: tuple[str, ...] = ()  # see variants.py
    app_certificate: str = ""  # when set, RTC tokens on join and update are verified

    def update(self, values: Any) -> None:
        """Validate every value first, then apply them all (a bad document changes nothing)."""
        if not isinstance(values, dict):
            raise ApiFault(400, "invalid_request_body", "config expects a JSON object")
        checked = {key: self._check(key, value) for key, value in values.items()}
        for key, value in checked.items():
            setattr(self, key, value)

    def _check(self, key: str, value: Any) -> Any:
        if key not in self.__dataclass_fields__:
            raise ApiFault(400, "invalid_field", f"unknown setting {key!r} (known: {', '.join(self.__dataclass_fields__)})")
        if key == "variants":
            try:
                return v.parse_variants(value)
            except ValueError as exc:
                raise ApiFault(400, "invalid_field", str(exc)) from None
        if key == "name_reuse":
            if value not in ("strict", "lenient"):
                raise ApiFault(400, "invalid_field", "name_reuse must be 'strict' or 'lenient'")
            return value
        if key == "app_certificate":
            if not isinstance(value, str):
                raise ApiFault(400, "invalid_field", "app_certificate must be a string ('' turns verification off)")
            return value.strip()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
            raise ApiFault(400, "invalid_field", f"{key} must be a non-negative number of seconds")
        return float(value)

    def public(self) -> dict[str, Any]:
        """The settings as `GET /_emulator/config` shows them (the certificate is never echoed)."""
        doc = dict(self.__dict__)
        doc["variants"] = list(self.variants)
        doc["app_certificate"] = bool(self.app_certificate)
        return doc


@dataclass
class Agent:  # persisted as its __dict__: new fields need defaults
    agent_id: str
    app_id: str
    name: str
    properties: dict[str, Any]
    preset: str | None
    pipeline_id: str | None
    create_ts: float
    start_ts: float
    status: str = "STARTING"
    stop_ts: float = 0
    message: str = ""
    stop_requested_at: float | None = None
    contents: list[dict[str, Any]] = field(default_factory=list)
    token_expires_at: float | None = None  # set when the emulator verified the token (app certificate)

    @property
    def channel(self) -> str:
        return str(self.properties.get("channel", ""))


@dataclass
class Call:
    agent_id: str
    app_id: str
    to_number: str
    from_number: str
    pipeline_id: str | None
    type: str
    channel: str
    create_ts: float
    state: str = "answered"
    stop_ts: float = 0
    reason: str | None = None


def new_agent_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def strip_password(address: str) -> str:
    """`user:pass@host` -> `user@host`: SIP passwords are write-only."""
    if "@" not in address:
        return address
    userinfo, host = address.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return f"{user}@{host}"
