"""Several `reconcile` replicas on one PostgreSQL ledger: in each cycle only the leader acts, the
others stand by (log line, /healthz detail, metric); when the leader goes away (resigns on
SIGTERM, or is SIGKILLed) a standby acts in its next cycle. Real PostgreSQL, real emulator."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reconciler import observe

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator
from .loop_rig import APP_A, DECLARED_TOKEN, LLM_KEY, FakeClock, Rig, agent

ROOT = Path(__file__).resolve().parent.parent


def _active(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "agora_reconciler_replica_active":
                return float(sample.value)
    raise AssertionError("no agora_reconciler_replica_active metric")


def test_only_the_leader_acts_and_a_standby_takes_over_when_it_resigns(tmp_path: Path, emu: Emulator, pg_url: str) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")], state=pg_url)
    clock = FakeClock()
    first, second = rig.loop(clock, interval=30), rig.loop(clock, interval=30)
    server = observe.serve("127.0.0.1:0", second)
    try:
        assert first.cycle().outcome == "success"
        assert second.cycle().outcome == "standby"
        assert len(rig.joins(APP_A)) == 1  # the agent was started once, by the leader
        standby = [e for e in rig.events if e.action == "replica" and e.outcome == "standby"]
        assert standby and f"pid {os.getpid()} " in standby[-1].reason and "agora-reconciler reconcile" in standby[-1].reason
        health = requests.get(f"http://{server.address}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["role"] == "standby" and f"pid {os.getpid()}" in health.json()["leader"]
        assert _active(requests.get(f"http://{server.address}/metrics", timeout=10).text) == 0
        rig.agents.append(agent("desk"))
        rig.write()
        clock.advance(30)
        assert second.cycle().outcome == "standby"  # the standby never acts while the leader is there
        assert len(rig.joins(APP_A)) == 1
        first.close()  # SIGTERM: the leader steps down
        clock.advance(30)
        assert second.cycle().outcome == "success"
        assert len(rig.joins(APP_A)) == 2  # desk, started by the new leader
        health = requests.get(f"http://{server.address}/healthz", timeout=10).json()
        assert health["role"] == "active" and "leader" not in health
        assert _active(requests.get(f"http://{server.address}/metrics", timeout=10).text) == 1
        clock.advance(30)
        assert first.cycle().outcome == "standby"
    finally:
        server.close()
        first.close()
        second.close()


class _Replica:
    """A `reconcile` process with --listen on a free port; its stderr collected by a thread."""

    def __init__(self, rig: Rig, emu: Emulator) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
        env.update(
            {
                "AGORA_CUSTOMER_ID": CUSTOMER_ID,
                "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET,
                "AGORA_ENDPOINT": emu.url,
                "RTC_TOKEN": DECLARED_TOKEN,
                "LLM_KEY": LLM_KEY,
                "PYTHONPATH": str(ROOT),
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "reconcile", str(rig.path), "--interval", "1s", "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.base = "http://" + _wait(lambda: next((m.group(1) for line in self.lines if (m := re.search(r"on http://(\S+)", line))), None))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def health(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = requests.get(f"{self.base}/healthz", timeout=10).json()
        except requests.RequestException:
            return {}
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def _wait(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_sigkill_of_the_active_replica_the_standby_acts_in_its_next_cycle(tmp_path: Path, emu: Emulator, pg_url: str) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")], state=pg_url)
    a = _Replica(rig, emu)
    b: _Replica | None = None
    try:
        _wait(lambda: a.health().get("role") == "active")
        b = _Replica(rig, emu)
        _wait(lambda: b is not None and b.health().get("role") == "standby")
        assert f"pid {a.proc.pid} " in b.health()["leader"]
        assert _active(requests.get(f"{b.base}/metrics", timeout=10).text) == 0
        assert len(rig.joins(APP_A)) == 1
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(30)
        _wait(lambda: b is not None and b.health().get("role") == "active")
        rig.agents.append(agent("desk"))
        rig.write()
        _wait(lambda: len(rig.joins(APP_A)) == 2)  # the new leader acts: desk started, once
        assert any("replica active" in line for line in b.lines) and any("replica standby" in line for line in b.lines)
    finally:
        a.stop()
        if b is not None:
            b.stop()
    assert len(rig.joins(APP_A)) == 2


def test_the_two_replica_kubernetes_variant_patches_what_the_base_has() -> None:
    k8s = ROOT / "examples" / "kubernetes"
    overlay = k8s / "replicas"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert all((overlay / resource).is_file() for resource in kustomization["resources"])
    base = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for path in sorted(k8s.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
    }
    for patch in kustomization["patches"]:
        doc = yaml.safe_load((overlay / patch["path"]).read_text())
        assert (doc["kind"], doc["metadata"]["name"]) in base, patch  # every patch targets an object of the base
    patch = yaml.safe_load((overlay / "deployment-patch.yaml").read_text())
    assert patch["spec"]["replicas"] == 2
    container = patch["spec"]["template"]["spec"]["containers"][0]
    base_pod = base[("Deployment", "agora-reconciler")]["spec"]["template"]["spec"]
    assert container["name"] in {c["name"] for c in base_pod["containers"]}
    assert "state" in {v["name"] for v in base_pod["volumes"]}  # what the patch removes exists
    assert "/state" in {m["mountPath"] for c in base_pod["containers"] for m in c["volumeMounts"]}
    env = {e["name"]: e for e in container["env"]}
    url = env["AGORA_RECONCILER_STATE"]["value"]
    assert url.startswith("postgresql://") and ":" not in url.split("//", 1)[1].split("@", 1)[0]  # no password in the URL
    assert (
        env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
        == yaml.safe_load((overlay / "ledger-secret.yaml").read_text())["metadata"]["name"]
    )
    assert env["AGORA_RECONCILER_STATE_NAME"]["value"]
