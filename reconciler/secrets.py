"""What is sensitive, how it is masked, and salted fingerprints of secret values.

Three defences, from the inside out:
- `is_sensitive_key()` names credential keys (DESIGN.md section 9), so their values are
  fingerprinted in the ledger and masked in plans whatever their origin;
- `fingerprint()` turns a secret into a salted HMAC so the ledger can tell "changed" without
  holding the value;
- `REDACTOR` remembers every secret value the process has seen (interpolated values, credentials)
  and scrubs them, in every encoded form, from any text on its way out: error messages, logs,
  tracebacks. Values shorter than `MIN_FREE_TEXT_LENGTH` are not searched for in free text (they
  would mask ordinary words); `validate` warns about such secrets.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import re
import threading
import traceback
from typing import Any
from urllib.parse import quote, quote_plus

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
    return key not in _NOT_SENSITIVE and bool(_SENSITIVE_KEY.fullmatch(key))


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


MIN_FREE_TEXT_LENGTH = 8  # shorter secrets are not searched for in free text: they would mask ordinary words


def encoded_forms(value: str) -> set[str]:
    """Every form a secret takes in text: raw and stripped, JSON-escaped (ASCII and not, and twice,
    for JSON inside JSON), `repr`-escaped, URL-encoded (path, query and form encodings)."""
    forms = {value, value.strip()}
    for form in list(forms):
        for escaped in (json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1], repr(form)[1:-1]):
            forms.add(escaped)
            forms.add(json.dumps(escaped)[1:-1])
        forms.update((quote(form, safe=""), quote(form), quote_plus(form)))
    return {f for f in forms if len(f) >= MIN_FREE_TEXT_LENGTH}


_SCAN_MAX = 64  # registered forms looked for one by one before the pattern runs (each a fast substring search)


class Redactor:
    """Remembers secret strings and masks every form of them in any text. Thread-safe."""

    MIN_LENGTH = MIN_FREE_TEXT_LENGTH

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: Any) -> bool:
        """Remember a secret (or every string leaf of a structure). False when a string is too short
        to be masked safely in free text (it is then masked only where its position says so)."""
        if isinstance(value, (dict, list)):
            return all([self.register(leaf) for leaf in _leaves(value)])
        if not isinstance(value, str):
            return True
        if len(value.strip()) < self.MIN_LENGTH:
            return False
        forms = encoded_forms(value)
        with self._lock:
            if not forms <= self._values:
                self._values |= forms
                self._pattern = None
        return True

    def redact(self, text: str) -> str:
        with self._lock:
            if not self._values:
                return text
            if len(self._values) <= _SCAN_MAX and not any(value in text for value in self._values):
                return text  # nothing to mask: a substring search per value costs less than the pattern's scan
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


_SIP_USERINFO = re.compile(r"(sips?:)?([A-Za-z0-9._~-]+):([^@\s/]+)@")
_AUTH_HEADER = re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{8,}={0,2})|\b(agora\s+token=)(\S+)", re.IGNORECASE)


def _mask_auth(match: re.Match[str]) -> str:
    if match.group(3):
        return match.group(3) + MASK
    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except (ValueError, binascii.Error):
        return match.group(0)
    return match.group(1) + MASK if b":" in decoded else match.group(0)


# Any AccessToken2: "007" + base64(zlib(...)), and zlib's header makes it start "007eJ". Minted
# tokens (thousands in a long-running loop) are masked by shape rather than registered one by one.
_ACCESS_TOKEN2 = re.compile(r"007eJ[A-Za-z0-9+/]{16,}={0,2}")


# The characters other than ASCII letters that `_AUTH_HEADER` (IGNORECASE) takes for one of the
# letters of "basic" or "token=" and that `str.lower` does not turn into that letter
# (tests/test_secrets_prefilter.py checks this against the regex engine, code point by code point).
_CASE_EXTRAS = (("\u017f", "s"), ("\u0130", "i"), ("\u0131", "i"))


def _may_hold_auth_header(text: str) -> bool:
    """False only when `_AUTH_HEADER` cannot match: every match holds "basic" or "token=" in some
    case. A cheap look before the regex's scan, which costs 20 ms per MB (a big plan's text)."""
    if not text.isascii():
        for extra, letter in _CASE_EXTRAS:
            text = text.replace(extra, letter)
    lowered = text.lower()
    return "basic" in lowered or "token=" in lowered


def redact(text: str) -> str:
    """Mask every registered secret in `text` (in every encoded form), every AccessToken2 token,
    the credentials of any Basic or `agora token=` header, and SIP userinfo passwords."""
    text = REDACTOR.redact(text)
    if "007eJ" in text:
        text = _ACCESS_TOKEN2.sub(MASK, text)
    if _may_hold_auth_header(text):
        text = _AUTH_HEADER.sub(_mask_auth, text)
    if "@" not in text:  # no userinfo without one; the search costs more than the rest (a big plan: 0.15 s per MB)
        return text
    return _SIP_USERINFO.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}:{MASK}@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the message, its traceback and its stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RedactingFormatter(logging.Formatter):
    """Formats with `inner` (any format: text, JSON) and masks secrets in the final text, so a
    traceback, a stack or a field added by the format is masked too."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))
