"""The floor: the straightforward script that does an in-sync plan's work, measured beside the tool.

    python benchmarks/floor.py CONFIG LEDGER ENDPOINT   (credentials from AGORA_CUSTOMER_ID/SECRET)

libyaml load of the declaration, JSON decode of the ledger, the same requests the tool makes (one
phone-numbers list, the agents.list pages of every app), JSON decode of the answers, and a plain
comparison of every declared number and agent with what is live and owned. No positions, no schema,
no secrets handling, no plan: what any implementation must at least spend. Prints the number of
differences (0 for an in-sync account); `run.py` runs it in the same run as the tool.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import Any

import requests
import yaml

ALIVE = "0,1,2,5"
LOOK_BACK_S = 76 * 3600


def main(config: str, ledger_path: str, endpoint: str) -> int:
    with open(config, encoding="utf-8") as fh:
        doc = yaml.load(fh, Loader=yaml.CSafeLoader)
    with open(ledger_path, "rb") as fh:
        owned = json.load(fh)["resources"]
    http = requests.Session()
    token = base64.b64encode(f"{os.environ['AGORA_CUSTOMER_ID']}:{os.environ['AGORA_CUSTOMER_SECRET']}".encode()).decode()
    http.headers["Authorization"] = f"Basic {token}"
    api = endpoint.rstrip("/") + "/api/conversational-ai-agent/v2"
    response = http.get(f"{api}/phone-numbers", timeout=60)
    response.raise_for_status()
    live_numbers = {n["phone_number"]: n for n in json.loads(response.content)}
    alive: set[str] = set()
    since = int(time.time()) - LOOK_BACK_S
    for app in sorted({a["app_id"] for a in doc.get("agents") or []}):
        cursor = None
        while True:
            params: dict[str, Any] = {"from_time": since, "state": ALIVE, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            response = http.get(f"{api}/projects/{app}/agents", params=params, timeout=60)
            response.raise_for_status()
            page = json.loads(response.content)
            items = page["data"]["list"]
            alive.update(item["agent_id"] for item in items)
            cursor = (page.get("meta") or {}).get("cursor")
            if not cursor or not items:
                break
    differences = 0
    for number in doc.get("phone_numbers") or []:
        live = live_numbers.get(number["phone_number"])
        if live is None or live.get("label") != number.get("label") or f"phone_number/{number['phone_number']}" not in owned:
            differences += 1
            continue
        for section in ("inbound_config", "outbound_config"):
            shown = live.get(section) or {}
            if any(shown.get(key) != value for key, value in (number.get(section) or {}).items()):
                differences += 1
                break
    for agent in doc.get("agents") or []:
        entry = owned.get(f"agent/{agent['name']}")
        if entry is None or entry.get("agent_id") not in alive:
            differences += 1
    print(differences)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
