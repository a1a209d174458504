"""Emulator variants: the other plausible readings of the Agora API, switched on by name.

The public documentation and the official SDK leave several behaviours open (`shared/agora-api.md`
section 14). The emulator's default is one reading; each variant below is another, so the tool can
be tested against all of them. `emulator serve --variant NAME` (repeatable) or `POST
/_emulator/config {"variants": [...]}` switches them on; with no variant nothing changes.

- `bare-configs`: phone numbers show `inbound_config`/`outbound_config` without `pipeline_id`;
  the binding is readable only through `associated_pipeline` (inbound, else outbound).
- `null-configs`: both configs are `null`; bindings as in `bare-configs`.
- `extra-fields`: server-side fields at the top level of a phone number and inside both configs:
  `id`, `created_at`, `updated_at` (ISO 8601) and `sip_domain`.
- `normalized-address`: the outbound `address` comes back lower-cased with an explicit default
  port (5061 for `tls`, 5060 otherwise).
- `no-agent-name`: agent GET has neither `name` nor `channel` (the SDK's response model).
- `single-state`: agents.list accepts one state per query; a comma-separated list is a 400.
- `page-limit-20`: agents.list with `limit` above 20 is a 400.
- `idle-status`: a running agent whose channel has no remote user reports `IDLE` in list and get,
  and is listed under state 0, not under `RUNNING` (2). Channels have remote users unless marked
  otherwise with `POST /_emulator/channels {"app_id", "channel", "remote_users": false}`.
- `uid-busy`: a join whose channel and `agent_rtc_uid` belong to an agent still live or STOPPING
  is refused with 409 `TaskConflict`, the same answer as a reused name.
- `conflict-409`: the first add, the first update and the first delete of each phone number
  answer 409 `conflict` ("Concurrent modification conflict or resource locked") and do nothing;
  the next attempt of the same operation goes through.
- `not-found-type`: 404 bodies of phone numbers (and calls) carry `not_found`, as in the
  phone-number docs, instead of `phone_number_not_found` / `pipeline_not_found` / `call_not_found`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

VARIANTS: dict[str, str] = {
    "bare-configs": "phone-number configs without pipeline_id; bindings only in associated_pipeline",
    "null-configs": "phone-number configs are null; bindings only in associated_pipeline",
    "extra-fields": "server-side id, created_at, updated_at, sip_domain in phone numbers and their configs",
    "normalized-address": "outbound address lower-cased with an explicit default port (5061 tls, else 5060)",
    "no-agent-name": "agent GET has no name (and no channel)",
    "single-state": "agents.list accepts one state per query",
    "page-limit-20": "agents.list refuses limit above 20",
    "idle-status": "a running agent with no remote user in its channel reports IDLE",
    "uid-busy": "a join with the channel and uid of a live or STOPPING agent is a 409 TaskConflict",
    "conflict-409": "the first add, update and delete of each phone number answer 409 conflict",
    "not-found-type": "phone-number 404 bodies carry error_type not_found",
}
CONFLICT_MESSAGE = "Concurrent modification conflict or resource locked"
SIP_DOMAIN = "sip.agora.example"
_PORT = re.compile(r":[0-9]{1,5}\Z")


def parse_variants(values: Any) -> tuple[str, ...]:
    """A list of variant names -> a sorted tuple; `ValueError` names what is wrong."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ValueError("variants must be a list of names")
    unknown = sorted(set(values) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s): {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    return tuple(sorted(set(values)))


def normalize_address(address: str, transport: Any) -> str:
    """`User@SIP.Example.com` + tls -> `user@sip.example.com:5061`; a given port is kept."""
    lowered = address.lower()
    host = lowered.rsplit("@", 1)[-1]
    if _PORT.search(host) and (not host.startswith("[") or "]:" in host):
        return lowered
    port = 5061 if str(transport or "").lower() == "tls" else 5060
    return f"{lowered}:{port}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _server_fields(prefix: str, number: str, rec: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(f"{prefix}:{number}".encode()).hexdigest()[:16]
    created = float(rec.get("created_ts") or 0)
    updated = float(rec.get("updated_ts") or created)
    return {"id": f"{prefix}_{digest}", "created_at": _iso(created), "updated_at": _iso(updated), "sip_domain": SIP_DOMAIN}


def phone_number_view(view: dict[str, Any], rec: dict[str, Any], variants: Iterable[str]) -> dict[str, Any]:
    """Reshape the default PhoneNumber answer as the active variants would have it."""
    active = set(variants)
    if not active:
        return view
    inbound, outbound = view.get("inbound_config"), view.get("outbound_config")
    if "normalized-address" in active and isinstance(outbound, dict) and isinstance(outbound.get("address"), str):
        outbound["address"] = normalize_address(outbound["address"], outbound.get("transport"))
    if "bare-configs" in active:
        for config in (inbound, outbound):
            if isinstance(config, dict):
                config.pop("pipeline_id", None)
    if "extra-fields" in active:
        number = str(view["phone_number"])
        view = {**view, **_server_fields("pn", number, rec)}
        for key, config in (("ic", inbound), ("oc", outbound)):
            if isinstance(config, dict):
                config.update(_server_fields(key, number, rec))
    if "null-configs" in active:
        view["inbound_config"] = None
        view["outbound_config"] = None
    return view


def agent_view(view: dict[str, Any], variants: Iterable[str]) -> dict[str, Any]:
    """Agent GET as the active variants would have it."""
    if "no-agent-name" in set(variants):
        view.pop("name", None)
        view.pop("channel", None)
    return view


def not_found_code(code: str, variants: Iterable[str]) -> str:
    """The `error_type` of a telephony-shaped 404."""
    return "not_found" if "not-found-type" in set(variants) else code
