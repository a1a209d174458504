"""What is sensitive, how it is masked, and salted fingerprints of secret values.

Three defences, from the inside out:
- `is_sensitive_key()` names credential keys (DESIGN.md section 9), so their values are
  fingerprinted in the ledger and masked in plans whatever their origin;
- `fingerprint()` turns a secret into a salted HMAC so the ledger can tell "changed" without
  holding the value;
- `REDACTOR` remembers every secret value the process has seen (interpolated values, credentials)
  and scrubs them from any text on its way out: error messages, logs, tracebacks.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import threading
from typing import Any

SENSITIVE = "(sensitive)"
MASK = "***"
FINGERPRINT_PREFIX = "hmac-sha256:"

_SENSITIVE_KEY = re.compile(
    r"""^(
        api_key | key | token | secret.* | .*_secret | password | passwd | credentials | headers
        | encryption_key | encryption_salt | adc_credentials_string | access_key.* | secret_key
        | api_secret | agora_token | rtc_token | aws_.* | api_subscription_key | secret_id
        | authorization | private_key | client_secret | .*_token | .*_api_key
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
# Keys that look like credentials by the pattern above but are not.
_NOT_SENSITIVE = {"max_tokens", "max_output_tokens", "skip_patterns"}


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    """True when a mapping key names a credential (its value must never be shown)."""
    return key not in _NOT_SENSITIVE and bool(_SENSITIVE_KEY.match(key))


def sip_password(address: str) -> str | None:
    """The password in a SIP address's userinfo (`user:pass@host`), or None."""
    if "@" not in address:
        return None
    userinfo = address.rsplit("@", 1)[0]
    if ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def strip_sip_password(address: str) -> str:
    """`user:pass@host` -> `user@host` (what the API returns: SIP passwords are write-only)."""
    password = sip_password(address)
    if password is None:
        return address
    userinfo, host = address.rsplit("@", 1)
    return f"{userinfo.split(':', 1)[0]}@{host}"


def fingerprint(salt: str, value: Any) -> str:
    """A salted HMAC of a secret value: equal values give equal fingerprints for one salt."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    digest = hmac.new(salt.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return FINGERPRINT_PREFIX + digest[:32]


def slow_fingerprint(key: str, value: Any) -> str:
    """A keyed scrypt digest of many secret values at once, for documents that may be published
    (plan files): equal for equal values and key, and costly to guess a weak secret from."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.scrypt(canonical.encode(), salt=key.encode(), n=2**12, r=8, p=1, maxmem=16 * 1024 * 1024, dklen=16)
    return "scrypt:" + digest.hex()


class Redactor:
    """Remembers secret strings and masks them in any text. Thread-safe."""

    MIN_LENGTH = 4  # shorter values would mask ordinary words

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: Any) -> None:
        if isinstance(value, (dict, list)):
            for leaf in _leaves(value):
                self.register(leaf)
            return
        if not isinstance(value, str) or len(value) < self.MIN_LENGTH:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = None

    def redact(self, text: str) -> str:
        with self._lock:
            if not self._values:
                return text
            if self._pattern is None:
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            pattern = self._pattern
        return pattern.sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


REDACTOR = Redactor()


def redact(text: str) -> str:
    """Mask every registered secret in `text`, plus SIP userinfo passwords."""
    text = REDACTOR.redact(text)
    return re.sub(r"(sips?:)?([A-Za-z0-9._~-]+):([^@\s/]+)@", lambda m: f"{m.group(1) or ''}{m.group(2)}:{MASK}@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True
