"""Shared fixtures: the emulator served over real loopback HTTP, its admin API, and CLI runners."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from hypothesis import settings

from reconciler.cli import cli
from reconciler.secrets import REDACTOR

from .e2e import Project
from .pgserver import PgServer
from .pgserver import running as running_postgres

# Generated tests are derandomized: the same examples on every run, so no verdict depends on chance
# (`HYPOTHESIS_PROFILE=explore` for a randomized local hunt).
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

CUSTOMER_ID = "test-customer"
CUSTOMER_SECRET = "s3cr3t-Customer-Secret-9f8e7d"
PREFIX = "/api/conversational-ai-agent/v2"


@dataclass
class Emulator:
    """A running `agora-reconciler emulator serve` and its admin API."""

    url: str
    process: subprocess.Popen[str]
    session: requests.Session

    @property
    def api(self) -> str:
        return self.url + "/api/conversational-ai-agent"

    def admin(self, method: str, route: str, body: Any = None) -> Any:
        response = self.session.request(method, f"{self.url}/_emulator/{route}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.admin("POST", "reset")

    def connections(self) -> set[int]:
        """The ids of the client connections the server has open, asked on a new connection: the
        server accepts in order, so every connection made before this call is in the answer."""
        response = requests.get(f"{self.url}/_emulator/connections", timeout=30, headers={"Connection": "close"})
        response.raise_for_status()
        return set(response.json()["open"])

    def wait_closed(self, connections: set[int]) -> None:
        """Block until every open connection outside `connections` is closed (everything a killed
        client had sent is then executed; the 60 s bound only stops a hung test)."""
        deadline = time.monotonic() + 60
        while (left := self.connections() - connections) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not left, f"connections {sorted(left)} still open"

    def seed(self, **doc: Any) -> Any:
        return self.admin("POST", "seed", doc)

    def fault(self, **rule: Any) -> None:
        self.admin("POST", "faults", rule)

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.admin("GET", "requests")["requests"]
        return result

    def mutating(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] != "GET"]

    def advance(self, seconds: float) -> None:
        self.admin("POST", "clock", {"advance_s": seconds})

    def set_variants(self, *names: str) -> list[str]:
        """Switch on these emulator variants (and off all others) until the next reset."""
        result: list[str] = self.admin("POST", "config", {"variants": list(names)})["variants"]
        return result

    def remote_users(self, app_id: str, channel: str, present: bool) -> None:
        """Mark a channel as having remote users or not (the `idle-status` variant reads it)."""
        self.admin("POST", "channels", {"app_id": app_id, "channel": channel, "remote_users": present})

    def numbers(self) -> dict[str, Any]:
        response = self.session.get(f"{self.api}/v2/phone-numbers", headers=basic_headers(), timeout=30)
        return {n["phone_number"]: n for n in response.json()}

    def agents(self, app_id: str, states: str = "1,2,5") -> list[dict[str, Any]]:
        response = self.session.get(
            f"{self.api}/v2/projects/{app_id}/agents",
            params={"from_time": 0, "state": states, "limit": 100},
            headers=basic_headers(),
            timeout=30,
        )
        items: list[dict[str, Any]] = response.json()["data"]["list"]
        return items

    def agent(self, app_id: str, agent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.session.get(
            f"{self.api}/v2/projects/{app_id}/agents/{agent_id}", headers=basic_headers(), timeout=30
        ).json()
        return result


def basic_headers(customer_id: str = CUSTOMER_ID, secret: str = CUSTOMER_SECRET) -> dict[str, str]:
    token = base64.b64encode(f"{customer_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def start_emulator(extra: list[str] | None = None, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", "--quiet", *(extra or [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET, **(env or {})},
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), (url, process.stderr.read() if process.stderr else "")
    return url, process


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    url, process = start_emulator()
    emu = Emulator(url, process, requests.Session())
    try:
        yield emu
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def serve_emulator() -> Iterator[Any]:
    """Start extra `emulator serve` processes with options, e.g. `serve_emulator("--variant", "bare-configs")`."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Emulator:
        url, process = start_emulator(list(args), env=env)
        started.append(process)
        return Emulator(url, process, requests.Session())

    yield start
    for process in started:
        process.terminate()
        process.communicate(timeout=10)


@pytest.fixture
def emu(emulator_server: Emulator) -> Emulator:
    """The shared server, reset: empty store, no faults, empty request log, clock at now."""
    emulator_server.reset()
    emulator_server.admin("POST", "config", {"stop_delay_s": 0.2})
    return emulator_server


@pytest.fixture
def project(tmp_path: Path, api_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Project:
    """A config folder with its own ledger; its secrets are in the environment."""
    p = Project(tmp_path)
    for key, value in p.env().items():
        monkeypatch.setenv(key, value)
    return p


@pytest.fixture
def api_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET, "AGORA_ENDPOINT": emu.url, "NO_COLOR": "1"}
    for key in ("AGORA_AUTH_TOKEN", "AGORA_RECONCILER_STATE", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def run() -> Any:
    """Run the CLI in-process (click's runner) against whatever endpoint the environment names."""

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        runner = CliRunner()
        result = runner.invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke


def run_process(*args: str, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 120) -> Result:
    """Run the CLI as a real process (for signals, locks across processes, the quick start)."""
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL for this test session (tests/pgserver.py), or AGORA_RECONCILER_TEST_DSN's."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A postgresql:// URL (password included) whose search_path is a fresh, empty schema."""
    return pg_server.url(pg_server.new_schema())


@pytest.fixture(autouse=True)
def _not_in_automation_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI runs the suite with CI=true; tests that want automation mode set it themselves."""
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture(autouse=True)
def _fresh_redactor() -> Iterator[None]:
    yield
    REDACTOR.clear()


def number(phone: str, **extra: Any) -> dict[str, Any]:
    """A live phone number as the seed endpoint takes it."""
    doc = {
        "provider": "byo",
        "phone_number": phone,
        "label": f"line {phone[-4:]}",
        "inbound": True,
        "outbound": True,
        "inbound_config": {},
        "outbound_config": {"address": "sip.example.com", "transport": "tls"},
    }
    doc.update(extra)
    return doc


def agent_props(channel: str, uid: str = "1001", **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "token": "tok", "agent_rtc_uid": uid, "remote_rtc_uids": ["*"], "idle_timeout": 0, **extra}
