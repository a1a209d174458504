"""The rules a schema cannot say, checked across every file of a declaration.

Owns: unique phone numbers, agent names and (app, channel, uid) triples; valid CIDR blocks; an
app_id for every agent; a token for every agent unless a certificate is set to mint them; the
certificate (from `${VAR}`, 32 hexadecimal characters) and the token TTL (10 s to 24 h); warnings for literal secrets and SIP passwords in the file, agents that
would exit when idle, and `prune: true` with no numbers declared.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from ..errors import Diagnostic
from ..model import parse_duration
from ..secrets import MIN_FREE_TEXT_LENGTH, REDACTOR, is_sensitive_key, sip_password
from .reader import Path_, _Document, dotted


def _check_semantics(
    docs: list[_Document], settings: dict[str, Any], settings_docs: dict[str, _Document], warnings: list[Diagnostic]
) -> None:
    numbers: dict[str, tuple[_Document, Path_]] = {}
    agents: dict[str, tuple[_Document, Path_]] = {}
    uids: dict[tuple[str, str, str], tuple[_Document, Path_]] = {}
    default_app = settings.get("app_id")
    _check_token_settings(settings, settings_docs)
    for doc in docs:
        value = doc.value if isinstance(doc.value, dict) else {}
        _short_secret_warnings(doc, (), value, warnings)
        for i, item in enumerate(value.get("phone_numbers") or []):
            if not isinstance(item, dict):
                continue
            base: Path_ = ("phone_numbers", i)
            key = item.get("phone_number")
            if isinstance(key, str):
                _check_unique(numbers, key, doc, base, f"phone number {key}")
            inbound = item.get("inbound_config")
            for j, cidr in enumerate((inbound.get("allowed_addresses") if isinstance(inbound, dict) else None) or []):
                if isinstance(cidr, str) and not _is_network(cidr):
                    doc.error(
                        (*base, "inbound_config", "allowed_addresses", j),
                        f"'{cidr}' is not an IP address or CIDR block (e.g. 112.126.15.64/27)",
                    )
            outbound = item.get("outbound_config")
            _literal_secret_warnings(doc, (*base, "outbound_config"), outbound, warnings)
            address = outbound.get("address") if isinstance(outbound, dict) else None
            apath = (*base, "outbound_config", "address")
            if isinstance(address, str) and sip_password(address):
                REDACTOR.register(sip_password(address))
                if apath not in doc.secrets:
                    loc = doc.where(apath)
                    warnings.append(
                        Diagnostic(
                            loc.file,
                            loc.line,
                            loc.col,
                            f"{dotted(apath)} has a literal SIP password; use ${{VAR}} to keep it out of the file",
                            dotted(apath),
                            "warning",
                        )
                    )
        for i, item in enumerate(value.get("agents") or []):
            if not isinstance(item, dict):
                continue
            base = ("agents", i)
            name = item.get("name")
            if isinstance(name, str):
                _check_unique(agents, name, doc, base, f"agent '{name}'")
            app_id = item.get("app_id") or default_app
            if not app_id:
                doc.error(
                    base,
                    f"agent '{name}' has no app_id and settings.app_id is not set; add app_id: ${{AGORA_APP_ID}} to the agent or to settings",
                )
            props = item.get("properties")
            if not isinstance(props, dict):
                continue
            _literal_secret_warnings(doc, (*base, "properties"), props, warnings)
            if "token" not in props and not settings.get("app_certificate"):
                doc.error(
                    (*base, "properties"),
                    f"{dotted((*base, 'properties'))} is missing the required key 'token' "
                    "(or set settings.app_certificate: ${AGORA_APP_CERTIFICATE} to have the tool mint it)",
                )
            channel, uid = props.get("channel"), props.get("agent_rtc_uid")
            if isinstance(channel, str) and isinstance(uid, str) and uid != "0" and app_id:
                key3 = (str(app_id), channel, uid)
                if key3 in uids:
                    other_doc, other_path = uids[key3]
                    doc.error(
                        (*base, "properties", "agent_rtc_uid"),
                        f"agent_rtc_uid {uid} in channel {channel} is already used by the agent at {other_doc.where(other_path)}; two agents cannot share a uid in one channel",
                    )
                else:
                    uids[key3] = (doc, (*base, "properties", "agent_rtc_uid"))
            idle = props.get("idle_timeout")
            if idle != 0:
                p = (*base, "properties", "idle_timeout") if "idle_timeout" in props else (*base, "properties")
                loc = doc.where(p) if "idle_timeout" in props else doc.key_where(p) or doc.where(p)
                shown = idle if idle is not None else "30 (the default)"
                warnings.append(
                    Diagnostic(
                        loc.file,
                        loc.line,
                        loc.col,
                        f"agent '{name}' has idle_timeout {shown}: it exits that long after users leave and will be restarted again and again; set idle_timeout: 0 for a long-running agent",
                        dotted(p),
                        "warning",
                    )
                )
    if settings.get("prune") is True and not numbers:
        doc = settings_docs["prune"]
        loc = doc.key_where(("settings", "prune")) or doc.where(("settings", "prune"))
        warnings.append(
            Diagnostic(
                loc.file,
                loc.line,
                loc.col,
                "prune: true with no phone numbers declared: apply would delete every live number (the safety gate asks for --force)",
                "settings.prune",
                "warning",
            )
        )


def _check_token_settings(settings: dict[str, Any], settings_docs: dict[str, _Document]) -> None:
    certificate = settings.get("app_certificate")
    if isinstance(certificate, str):
        doc, path = settings_docs["app_certificate"], ("settings", "app_certificate")
        REDACTOR.register(certificate)
        if path not in doc.secrets:
            doc.error(path, "settings.app_certificate is a literal secret in the file; write app_certificate: ${AGORA_APP_CERTIFICATE}")
        elif not _is_hex32(certificate):
            doc.error(path, f"settings.app_certificate must be 32 hexadecimal characters (the value has {len(certificate)} characters)")
    ttl = settings.get("token_ttl")
    if isinstance(ttl, str):
        doc, path = settings_docs["token_ttl"], ("settings", "token_ttl")
        from ..tokens import MAX_TTL, MIN_TTL  # only declarations with a token TTL

        seconds = parse_duration(ttl)
        if seconds is not None and not MIN_TTL <= seconds <= MAX_TTL:
            doc.error(path, f"settings.token_ttl is {ttl}: a token lives at least 10s and at most 24h (the API's cap)")


def _is_hex32(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdefABCDEF" for c in value)


@functools.lru_cache(maxsize=4096)
def _is_network(text: str) -> bool:
    """An IP address or CIDR block (the same few blocks recur for every number: parsed once each)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _check_unique(seen: dict[str, tuple[_Document, Path_]], key: str, doc: _Document, path: Path_, what: str) -> None:
    if key in seen:
        other_doc, other_path = seen[key]
        doc.error(path, f"{what} is declared twice: here and at {other_doc.where(other_path)}")
    else:
        seen[key] = (doc, path)


def _literal_secret_warnings(doc: _Document, path: Path_, value: Any, warnings: list[Diagnostic]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if is_sensitive_key(key) and (*path, key) not in doc.secrets and _has_literal(child, doc, (*path, key)):
                child_path = (*path, key)
                REDACTOR.register(child)
                loc = doc.where(child_path)
                warnings.append(
                    Diagnostic(
                        loc.file,
                        loc.line,
                        loc.col,
                        f"{dotted(child_path)} is a literal secret in the file; use ${{VAR}} interpolation instead",
                        dotted(child_path),
                        "warning",
                    )
                )
            elif isinstance(child, (dict, list)):  # only containers can hold a credential key
                _literal_secret_warnings(doc, (*path, key), child, warnings)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            if isinstance(child, (dict, list)):
                _literal_secret_warnings(doc, (*path, i), child, warnings)


def _has_literal(value: Any, doc: _Document, path: Path_) -> bool:
    if isinstance(value, str):
        return bool(value) and path not in doc.secrets
    if isinstance(value, dict):
        return any(_has_literal(v, doc, (*path, k)) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_literal(v, doc, (*path, i)) for i, v in enumerate(value))
    return False


def _short_secret_warnings(doc: _Document, path: Path_, value: Any, warnings: list[Diagnostic], secret: bool = False) -> None:
    """Warn about each declared secret (a credential key's value, a SIP password) too short to be
    masked in free text without masking ordinary words: it is masked in plans and the ledger only.
    Only containers, secret values and `address` values are visited (no other value can warn)."""
    if isinstance(value, dict):
        for key, child in value.items():
            kind = type(child)
            if kind is str:  # an address holds a SIP password only after a user part (`user:pass@host`)
                if secret or (key == "address" and "@" in child) or is_sensitive_key(str(key)):
                    _short_secret_warnings(doc, (*path, key), child, warnings, secret or is_sensitive_key(str(key)))
            elif kind is dict or kind is list or isinstance(child, (dict, list, str)):
                _short_secret_warnings(doc, (*path, key), child, warnings, secret or is_sensitive_key(str(key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            kind = type(child)
            if kind is dict or kind is list or (secret and isinstance(child, str)) or (kind is not str and isinstance(child, (dict, list))):
                _short_secret_warnings(doc, (*path, i), child, warnings, secret)
    elif isinstance(value, str):
        shown = value if secret else (sip_password(value) if path and path[-1] == "address" else None)
        if shown and len(shown.strip()) < MIN_FREE_TEXT_LENGTH:
            loc = doc.where(path)
            warnings.append(
                Diagnostic(
                    loc.file,
                    loc.line,
                    loc.col,
                    f"{dotted(path)} holds a secret shorter than {MIN_FREE_TEXT_LENGTH} characters: it is masked in plans and "
                    "the ledger, but cannot be masked in free text (errors, logs) without hiding ordinary words; use a longer one",
                    dotted(path),
                    "warning",
                )
            )
