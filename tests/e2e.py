"""Helpers for end-to-end tests: a declaration written to disk for the emulator-backed CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

APP = "app-e2e"
SECRET_TOKEN = "007eJxTYLh-rtc-token-9d1c3f"  # looks like an AccessToken2
SECRET_KEY = "sk-live-4f8a2b9c7d6e5f4a3b2c1d0e"
SECRET_SIP = "Sip-Pa55word-77"


def number_spec(phone: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "phone_number": phone,
        "provider": "byo",
        "label": f"line {phone[-4:]}",
        "inbound_config": {"allowed_addresses": ["112.126.15.64/27"], "pipeline_id": "pl_demo_support"},
        "outbound_config": {"address": "sip.example.com", "transport": "tls", "pipeline_id": "pl_demo_sales"},
    }
    doc.update(extra)
    return doc


def agent_spec(name: str, channel: str | None = None, **props: Any) -> dict[str, Any]:
    return {
        "name": name,
        "preset": "deepgram_nova_3,openai_gpt_4o_mini",
        "properties": {
            "channel": channel or name,
            "token": "${RTC_TOKEN}",
            "agent_rtc_uid": "1001",
            "remote_rtc_uids": ["*"],
            "idle_timeout": 0,
            "llm": {"api_key": "${OPENAI_KEY}", "params": {"model": "gpt-4o-mini"}},
            **props,
        },
    }


class Project:
    """A config folder with its own ledger, pointed at the emulator through the environment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "agora.yaml"
        self.numbers: list[dict[str, Any]] = [number_spec("+14155550100"), number_spec("+14155550101", label="Sales")]
        self.agents: list[dict[str, Any]] = [agent_spec("concierge")]
        self.settings: dict[str, Any] = {"app_id": APP, "state": "state.json"}
        self.write()

    def write(self) -> Path:
        doc = {"version": 1, "settings": self.settings, "phone_numbers": self.numbers, "agents": self.agents}
        self.path.write_text("# yaml-language-server: $schema=../schemas/config.schema.json\n" + yaml.safe_dump(doc, sort_keys=False))
        return self.path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.state.read_text())
        return result

    def env(self) -> dict[str, str]:
        return {"RTC_TOKEN": SECRET_TOKEN, "OPENAI_KEY": SECRET_KEY, "SIP_PASSWORD": SECRET_SIP}
