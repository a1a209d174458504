"""`export`: the live phone numbers as a configuration document (write-only SIP passwords become
`${SIP_PASSWORD_<digits>}` placeholders), with comments, and the running agents listed apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..client import Client

INBOUND_EXPORT_KEYS = ("allowed_addresses", "pipeline_id")
OUTBOUND_EXPORT_KEYS = ("address", "transport", "prefix", "user", "pipeline_id")


@dataclass(frozen=True)
class Exported:
    """`export`: the document, trailing comments by value path, and what cannot be exported."""

    document: dict[str, Any]
    comments: dict[tuple[str | int, ...], str]
    variables: tuple[str, ...]  # ${VAR} placeholders the user must set
    agents: dict[str, list[dict[str, Any]]]  # app id -> running agents (start properties cannot be read)


def sip_password_variable(phone_number: str) -> str:
    return "SIP_PASSWORD_" + "".join(ch for ch in phone_number if ch.isdigit())


def _exported_number(item: Mapping[str, Any]) -> dict[str, Any]:
    raw_in, raw_out = dict(item.get("inbound_config") or {}), dict(item.get("outbound_config") or {})
    inbound = {k: raw_in[k] for k in INBOUND_EXPORT_KEYS if raw_in.get(k) not in (None, [], "")}
    outbound = {k: raw_out[k] for k in OUTBOUND_EXPORT_KEYS if raw_out.get(k) not in (None, "")}
    if "pipeline_id" not in raw_in and "pipeline_id" not in raw_out and (item.get("associated_pipeline") or {}).get("pipeline_id"):
        inbound["pipeline_id"] = item["associated_pipeline"]["pipeline_id"]
    return {
        "phone_number": item["phone_number"],
        "provider": item.get("provider"),
        "label": item.get("label", ""),
        "inbound": bool(item.get("inbound", True)),
        "outbound": bool(item.get("outbound", True)),
        "inbound_config": inbound,
        "outbound_config": outbound,
    }


def export_document(client: Client, app_ids: Sequence[str] = ()) -> Exported:
    """Live numbers as a configuration document; the running agents of `app_ids` are listed
    apart (the API does not return start properties). SIP passwords, which the API never returns,
    become `${SIP_PASSWORD_<digits>}` placeholders wherever a SIP user is set."""
    live = sorted(client.list_numbers(), key=lambda n: str(n.get("phone_number")))
    names = {
        str(p["pipeline_id"]): str(p["pipeline_name"])
        for p in (n.get("associated_pipeline") or {} for n in live)
        if p.get("pipeline_id") and p.get("pipeline_name")
    }
    numbers: list[dict[str, Any]] = []
    comments: dict[tuple[str | int, ...], str] = {}
    variables: list[str] = []
    for index, item in enumerate(live):
        entry = _exported_number(item)
        for side in ("inbound_config", "outbound_config"):
            pipeline = entry[side].get("pipeline_id")
            if pipeline in names:
                comments[("phone_numbers", index, side, "pipeline_id")] = f"pipeline: {names[pipeline]}"
        if entry["outbound_config"].get("user"):
            variable = sip_password_variable(entry["phone_number"])
            entry["outbound_config"]["password"] = "${" + variable + "}"
            comments[("phone_numbers", index, "outbound_config", "password")] = f"write-only: set {variable} (the API never returns it)"
            variables.append(variable)
        numbers.append(entry)
    agents = {app: list(client.iter_agents(app, from_time=0)) for app in app_ids}
    return Exported({"version": 1, "phone_numbers": numbers}, comments, tuple(variables), agents)
