"""The reconcile loop at scale: token minting cost, and `reconcile --once` cycles against `emulator serve`.

    python benchmarks/loop.py [--agents 1000]

Scenarios (each a child process of the real CLI, against a real emulator process that verifies
every token with `--app-certificate`): the first cycle (starts every agent with a minted token),
a steady cycle (nothing to do), and a healing cycle after 10 % of the agents were crashed through
the admin API. For each: wall and CPU seconds, peak RSS, and the API requests it made (from the
emulator's request log). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler import tokens  # noqa: E402

CUSTOMER_ID, CUSTOMER_SECRET = "bench", "bench-secret"
APPS = ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210")
CERT = "5CFd2fd1755d40ecb72977518be15d3b"


def mint_rate(n: int = 20_000) -> float:
    """Microseconds per minted RTC+RTM token."""
    started = time.perf_counter()
    for i in range(n):
        tokens.mint_agent_token(APPS[0], CERT, f"room-{i}", 1000 + i, ttl=86_400, rtm=True, issued_at=1_800_000_000, salt=i + 1)
    return (time.perf_counter() - started) / n * 1e6


def serve() -> tuple[str, subprocess.Popen[str]]:
    env = {**os.environ, "AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET}
    cmd = [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", "--quiet", "--app-certificate", CERT]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    return process.stdout.readline().strip(), process


def declaration(folder: Path, agents: int) -> Path:
    doc: dict[str, Any] = {
        "version": 1,
        "settings": {"state": "state.json", "app_certificate": "${AGORA_APP_CERTIFICATE}", "token_ttl": "24h", "parallelism": 16},
        "agents": [
            {
                "name": f"agent-{i}",
                "app_id": APPS[i % len(APPS)],
                "preset": "deepgram_nova_3,openai_gpt_4o_mini",
                "properties": {"channel": f"room-{i}", "agent_rtc_uid": str(1000 + i), "remote_rtc_uids": ["*"], "idle_timeout": 0},
            }
            for i in range(agents)
        ],
    }
    path = folder / "agora.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cycle(path: Path, url: str) -> tuple[float, float, float, int]:
    env = {
        **os.environ,
        "AGORA_CUSTOMER_ID": CUSTOMER_ID,
        "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET,
        "AGORA_ENDPOINT": url,
        "AGORA_APP_CERTIFICATE": CERT,
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "reconcile", str(path), "--once", "-q"], env=env, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, process.stderr.read() if process.stderr else code
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    args = parser.parse_args()
    print(f"minting: {mint_rate():.1f} µs per RTC+RTM token")
    url, process = serve()
    admin = requests.Session()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = declaration(Path(tmp), args.agents)
            rows = []
            for name, prepare in (
                ("first cycle: start every agent, minted tokens", lambda: None),
                ("steady cycle: nothing to do", lambda: None),
                ("healing cycle: 10 % crashed", lambda: crash(admin, url, args.agents // 10)),
            ):
                prepare()
                admin.delete(f"{url}/_emulator/requests", timeout=30)
                wall, cpu, rss, _ = cycle(path, url)
                count = len(admin.get(f"{url}/_emulator/requests", timeout=30).json()["requests"])
                rows.append((name, wall, cpu, rss, count))
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"\n| {args.agents} agents, 2 apps | wall s | CPU s | peak RSS MB | API requests |\n|---|---|---|---|---|")
    for name, wall, cpu, rss, count in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {count} |")
    print(f"\n(self: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


def crash(admin: requests.Session, url: str, n: int) -> None:
    auth = (CUSTOMER_ID, CUSTOMER_SECRET)
    crashed = 0
    for app in APPS:
        listed = admin.get(
            f"{url}/api/conversational-ai-agent/v2/projects/{app}/agents",
            params={"from_time": 0, "state": "2", "limit": 100},
            auth=auth,
            timeout=30,
        ).json()["data"]["list"]
        for item in listed[: n // len(APPS)]:
            admin.post(f"{url}/_emulator/agents/{item['agent_id']}/crash", timeout=30)
            crashed += 1
    assert crashed == n, crashed


if __name__ == "__main__":
    main()
