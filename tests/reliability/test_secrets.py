"""Secrets never leak: every command, every format, -vv, errors that echo requests, internal errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..conftest import CUSTOMER_SECRET, Emulator
from ..e2e import Project, agent_spec
from .helpers import base, seed_bystanders

SECRETS = {
    "RTC_TOKEN": "007eJxTYLh-real-looking-rtc-token-4c1a9e",
    "OPENAI_KEY": "sk-proj-9fJw2kQ8vT1xL0aZ3bN7",
    "AZURE_KEY": "b3f1c9e8d7a64f2e9c1b0a7d6e5f4c3b",
    "SIP_PASSWORD": "Tr0ub4dor&3-sip",
    "ENCRYPTION_KEY": "enc-key-0f9e8d7c6b5a4938",
}


def _declare_secrets(project: Project) -> None:
    base(project)
    project.numbers[0]["outbound_config"]["address"] = "alice:${SIP_PASSWORD}@sip.example.com"
    project.numbers[1]["outbound_config"]["password"] = "${SIP_PASSWORD}"
    agent = agent_spec("secretive")
    agent["properties"]["tts"] = {"vendor": "microsoft", "params": {"key": "${AZURE_KEY}", "region": "eastus"}}
    agent["properties"]["rtc"] = {"encryption_key": "${ENCRYPTION_KEY}", "encryption_mode": 7}
    agent["properties"]["llm"]["headers"] = {"Authorization": "Bearer ${OPENAI_KEY}"}
    project.agents.append(agent)
    project.write()


def _everything_written(root: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix != ".yaml"]


def test_no_secret_anywhere(project: Project, run: Any, emu: Emulator, api_env: dict[str, str], tmp_path: Path, monkeypatch: Any) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    seed_bystanders(emu)
    _declare_secrets(project)
    path = str(project.path)
    outputs: list[str] = []
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    commands: list[tuple[str, ...]] = [("validate", path, "--format", fmt) for fmt in ("text", "json", "github")]
    commands += [("plan", path, "--format", fmt, "-vv") for fmt in ("text", "json", "markdown")]
    commands += [("plan", path, "--out", str(project.root / "plan.json"), "-vv")]
    commands += [("apply", path, "--auto-approve", "-vv", "--format", "json")]
    for command in commands:
        outputs.append(run(*command).output)
    # rotate every secret: the update and replace plans carry "(sensitive)" markers, never values
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value[::-1])
    commands = [("drift", path, "--format", fmt, "-vv") for fmt in ("text", "json", "markdown", "github")]
    commands += [("state", "list", "--state", str(project.state)), ("state", "show", "agent/secretive", "--state", str(project.state))]
    commands += [("export", "--app-id", "app-e2e", "-vv")]
    for command in commands:
        outputs.append(run(*command).output)
    # an API error that echoes the request body (which carries the rotated secrets)
    emu.fault(method="POST", path="/update$|/join$", status=400, count=10, echo_body=True)
    emu.fault(method="POST", path="phone-numbers$", status=400, count=10, echo_body=True)
    echoed = run("apply", path, "--auto-approve", "-vv", "--allow-replace")
    assert echoed.exit_code == 1 and "request was:" in echoed.stderr
    outputs.append(echoed.output)
    emu.admin("DELETE", "faults")
    # an internal error: a malformed answer from the API, with a traceback at -vv
    emu.fault(method="GET", path="/agents$", body={"data": {"list": [{"status": "RUNNING"}]}, "meta": {}})
    broken = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", path, "-vv"], capture_output=True, text=True, env={**os.environ, **api_env}, timeout=60
    )
    assert broken.returncode == 1 and "internal error" in broken.stderr and "Traceback" in broken.stderr
    outputs.append(broken.stdout + broken.stderr)
    written = [*_everything_written(project.root), summary.read_text()]
    secrets = [*SECRETS.values(), *(v[::-1] for v in SECRETS.values()), CUSTOMER_SECRET]
    for text in outputs + written:
        for secret in secrets:
            assert secret not in text
    assert any("(sensitive)" in text for text in outputs) and any("${AZURE_KEY}" in text for text in outputs)
