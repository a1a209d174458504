"""A reconcile loop driven in-process against `emulator serve` over loopback, with injected time.

The loop's clock is either a `FakeClock` the test moves by hand (backoff), or the emulator's own
clock read over its admin API (tokens: the emulator checks expiry on that clock), so no verdict
depends on how fast the machine is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reconciler import config, reconcile
from reconciler.client import Client, Credentials, resolve_endpoint
from reconciler.ledger import open_backend
from reconciler.loop import CycleResult, Event, Loop

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator

APP_A = "0123456789abcdef0123456789abcdef"
APP_B = "fedcba9876543210fedcba9876543210"
CERT = "5CFd2fd1755d40ecb72977518be15d3b"
DECLARED_TOKEN = "007eJxTYLh-declared-rtc-token-4d2c"
LLM_KEY = "sk-live-loop-4f8a2b9c7d6e5f4a3b2c"


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class EmulatorClock:
    """The emulator's clock, read over its admin API (so tokens and expiry agree exactly)."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def __call__(self) -> float:
        return float(self.emu.admin("GET", "clock")["now"])

    def advance(self, seconds: float) -> None:
        self.emu.advance(seconds)


def agent(name: str, *, app_id: str = APP_A, token: bool = True, uid: str = "1001", **props: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "channel": name,
        "agent_rtc_uid": uid,
        "remote_rtc_uids": ["*"],
        "idle_timeout": 0,
        "llm": {"api_key": "${LLM_KEY}", "params": {"model": "gpt-4o-mini"}},
        **props,
    }
    if token:
        properties["token"] = "${RTC_TOKEN}"
    return {"name": name, "app_id": app_id, "preset": "deepgram_nova_3,openai_gpt_4o_mini", "properties": properties}


class Rig:
    """A config folder, its ledger, and a `Loop` on it."""

    def __init__(self, root: Path, emu: Emulator, agents: list[dict[str, Any]], **settings: Any) -> None:
        self.root, self.emu = root, emu
        self.path = root / "agora.yaml"
        self.settings: dict[str, Any] = {"state": "state.json", **settings}
        self.agents = agents
        self.numbers: list[dict[str, Any]] = []
        self.env = {"RTC_TOKEN": DECLARED_TOKEN, "LLM_KEY": LLM_KEY, "AGORA_APP_CERTIFICATE": CERT}
        self.events: list[Event] = []
        self.client = Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET))
        self.write()

    def write(self, text: str | None = None) -> None:
        if text is None:
            doc = {"version": 1, "settings": self.settings, "phone_numbers": self.numbers, "agents": self.agents}
            text = yaml.safe_dump(doc, sort_keys=False)
        self.path.write_text(text)

    def loop(self, clock: Any, *, mode: str = "heal", jitter: Any = lambda: 0.0, interval: float = 30.0) -> Loop:
        desired = config.load([str(self.path)], self.env)

        def session_for(d: Any) -> reconcile.Session:
            return reconcile.Session.open(d, self.client, reconcile.resolve_options(d, {}, env={}))

        return Loop(
            [str(self.path)],
            desired,
            session_for,
            interval=interval,
            mode=mode,
            clock=clock,
            jitter=jitter,
            emit=self.events.append,
            env=self.env,
        )

    def ledger(self) -> dict[str, Any]:
        """The ledger as its backend reads it (the file and its journal of completed changes)."""
        doc: dict[str, Any] = open_backend(str(self.root / "state.json")).load().to_dict()
        return doc

    def entry(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.ledger()["resources"][f"agent/{name}"]
        return result

    def lines(self, *, action: str | None = None, outcome: str | None = None, address: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if (action is None or e.action == action)
            and (outcome is None or e.outcome == outcome)
            and (address is None or e.address == address)
        ]

    def joins(self, app_id: str) -> list[dict[str, Any]]:
        return [r for r in self.emu.requests() if r["method"] == "POST" and r["path"].endswith(f"/projects/{app_id}/join")]


def run_cycle(loop: Loop) -> CycleResult:
    result = loop.cycle()
    assert result.outcome in ("success", "partial"), (result.outcome, result.error)
    return result
