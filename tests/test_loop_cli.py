"""`reconcile` end to end: /healthz and /metrics, SIGTERM mid-cycle, --once exit codes, JSON log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from reconciler import observe
from reconciler.errors import ReconcilerError

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator
from .loop_rig import APP_A, APP_B, DECLARED_TOKEN, LLM_KEY, FakeClock, Rig, agent, run_cycle

ROOT = Path(__file__).resolve().parent.parent


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_healthz_and_metrics_answer_as_specified(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby"), agent("broken", app_id=APP_B)])
    emu.fault(method="POST", path=f"/projects/{APP_B}/join$", status=400, count=1000)
    clock = FakeClock()
    loop = rig.loop(clock, interval=30)
    server = observe.serve("127.0.0.1:0", loop)
    base = f"http://{server.address}"
    try:
        starting = requests.get(f"{base}/healthz", timeout=10)
        assert starting.status_code == 200 and starting.json()["status"] == "starting"
        run_cycle(loop)
        clock.advance(5)
        run_cycle(loop)  # the broken agent is held: 10 s after its failed start
        clock.advance(12)
        ok = requests.get(f"{base}/healthz", timeout=10)
        assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["seconds_since_last_success"] == 12
        metrics = requests.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
        s = _samples(metrics.text)
        assert s[("agora_reconciler_cycles_total", (("outcome", "partial"),))] == 1
        assert s[("agora_reconciler_cycles_total", (("outcome", "success"),))] == 1
        assert s[("agora_reconciler_cycles_total", (("outcome", "error"),))] == 0
        assert s[("agora_reconciler_changes_total", (("action", "create"), ("kind", "agent"), ("outcome", "ok")))] == 1
        assert s[("agora_reconciler_changes_total", (("action", "create"), ("kind", "agent"), ("outcome", "failed")))] == 1
        assert s[("agora_reconciler_api_requests_total", (("endpoint", "join"), ("status", "200")))] == 1
        assert s[("agora_reconciler_api_requests_total", (("endpoint", "join"), ("status", "400")))] == 1
        assert s[("agora_reconciler_managed_agents", (("status", "RUNNING"),))] == 1
        assert s[("agora_reconciler_managed_agents", (("status", "PENDING"),))] == 1  # its start never succeeded
        assert s[("agora_reconciler_agent_restarts_total", ())] == 0
        assert s[("agora_reconciler_crash_looping_agents", ())] == 0
        assert s[("agora_reconciler_token_renewals_total", (("outcome", "ok"),))] == 0
        assert s[("agora_reconciler_seconds_since_last_successful_cycle", ())] == 12
        assert s[("agora_reconciler_ledger_serial", ())] == rig.ledger()["serial"] > 0
        # the API stops answering: cycles fail, and after three intervals /healthz says why
        emu.fault(path="/phone-numbers", status=401, count=1000)
        for _ in range(3):
            clock.advance(30)
            assert loop.cycle().outcome == "error"
        failing = requests.get(f"{base}/healthz", timeout=10)
        assert failing.status_code == 503
        detail = failing.json()
        assert detail["status"] == "failing" and "more than 3 intervals" in detail["reason"] and "401" in detail["reason"]
        s = _samples(requests.get(f"{base}/metrics", timeout=10).text)
        assert s[("agora_reconciler_cycles_total", (("outcome", "error"),))] == 3
        assert s[("agora_reconciler_seconds_since_last_successful_cycle", ())] == 102
        assert requests.get(f"{base}/nothing", timeout=10).status_code == 404
    finally:
        server.close()


def _env(emu: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
    return {
        **env,
        "AGORA_CUSTOMER_ID": CUSTOMER_ID,
        "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET,
        "AGORA_ENDPOINT": emu.url,
        "RTC_TOKEN": DECLARED_TOKEN,
        "LLM_KEY": LLM_KEY,
        "NO_COLOR": "1",
    }


def test_sigterm_during_a_cycle_finishes_it_saves_and_exits_0(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")])
    held, release = tmp_path / "held", tmp_path / "release"
    # the start is held in flight (crashpoint `hold` on the first join) until the SIGTERM was seen
    command = ("reconcile", str(rig.path), "--interval", "1h", "--log-format", "json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.crashpoint", "hold:reconciler.client:Client.join:1", "--", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**_env(emu), "CRASHPOINT_HELD": str(held), "CRASHPOINT_RELEASE": str(release)},
    )
    watchdog = threading.Timer(300, proc.kill)  # a bound for a broken run (readline returns ""), not a verdict
    watchdog.start()
    try:
        deadline = time.monotonic() + 60
        while not held.exists():  # the join is called (and held) after the start was journaled
            assert proc.poll() is None, "reconcile exited before its first start"
            assert time.monotonic() < deadline, "no start was sent within 60 s"
            time.sleep(0.05)
        assert _pending(rig)
        proc.send_signal(signal.SIGTERM)  # the join is journaled and in flight
        assert proc.stderr is not None
        seen = []
        while not any(e.get("action") == "stop" and e.get("outcome") == "requested" for e in seen):
            line = proc.stderr.readline()
            assert line, "reconcile ended without logging the stop request"
            if line.startswith("{"):
                seen.append(json.loads(line))
        assert not any(e.get("action") == "create" for e in seen), "the start was still in flight at the SIGTERM"
        release.touch()  # the join goes on: the cycle must finish it and save
        _, rest = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    lines = seen + [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    stderr = json.dumps(lines) + rest
    assert {"time", "level", "address", "action", "outcome", "reason"} <= set(lines[0])
    assert any(e["address"] == "agent/lobby" and e["action"] == "create" and e["outcome"] == "ok" for e in lines)
    assert lines[-1]["action"] == "stop" and lines[-1]["outcome"] == "done"
    entry = rig.entry("lobby")
    assert entry["pending"] is False and entry["agent_id"] in {a["agent_id"] for a in emu.agents(APP_A)}
    assert DECLARED_TOKEN not in stderr and LLM_KEY not in stderr


def _pending(rig: Rig) -> bool:
    try:
        return bool(rig.entry("lobby").get("pending"))
    except (FileNotFoundError, KeyError, ReconcilerError):
        return False


def _cli(rig: Rig, emu: Emulator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "reconcile", str(rig.path), *args],
        capture_output=True,
        text=True,
        env=_env(emu),
        timeout=120,
    )


def test_once_exits_with_applys_codes(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby"), agent("broken", app_id=APP_B)])
    emu.fault(method="POST", path=f"/projects/{APP_B}/join$", status=400, count=1)
    failed = _cli(rig, emu, "--once")
    assert failed.returncode == 1 and "Apply finished with errors" in failed.stderr and "agent/broken" in failed.stderr
    done = _cli(rig, emu, "--once")
    assert done.returncode == 0, done.stderr
    assert "agent/broken create ok" in done.stderr and "agent/lobby" not in done.stderr.replace("cycle", "")
    rig.write("version: 1\nagents:\n  - name: [unclosed\n")
    broken = _cli(rig, emu, "--once")
    assert broken.returncode == 1 and f"{rig.path}:4:1: invalid YAML" in broken.stderr


def test_bad_options_are_clear_errors(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")])
    bad_interval = _cli(rig, emu, "--interval", "soon", "--once")
    assert bad_interval.returncode == 1 and "--interval" in bad_interval.stderr
    bad_listen = _cli(rig, emu, "--listen", "nowhere", "--once")
    assert bad_listen.returncode == 1 and "HOST:PORT" in bad_listen.stderr
    assert not (tmp_path / "state.json").exists()
