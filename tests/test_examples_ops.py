"""examples/kubernetes and examples/grafana: the manifests fit together, the mounted declaration is
valid and plans against the emulator, and the dashboard only queries metrics `/metrics` serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from reconciler import config, observe
from reconciler.loop import LoopStats

from .conftest import Emulator

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "examples" / "kubernetes"
GRAFANA = ROOT / "examples" / "grafana" / "agora-reconciler.json"


def _manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_one_replica_probed_on_healthz_through_a_named_metrics_port() -> None:
    m = _manifests()
    deployment = m["Deployment"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "reconcile" and args[args.index("--listen") + 1] == "0.0.0.0:9090"
    observe.parse_listen(args[args.index("--listen") + 1])
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["envFrom"] == [{"secretRef": {"name": m["Secret"]["metadata"]["name"]}}]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == m["ConfigMap"]["metadata"]["name"]
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == m["PersistentVolumeClaim"]["metadata"]["name"]
    assert m["Service"]["spec"]["ports"][0]["targetPort"] == "metrics"
    assert m["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"
    assert m["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def _mounted(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    m = _manifests()
    path = tmp_path / "config" / "agora.yaml"
    path.parent.mkdir()
    text = m["ConfigMap"]["data"]["agora.yaml"].replace("/state/state.json", str(tmp_path / "state.json"))
    path.write_text(text)
    secret = m["Secret"]["stringData"]
    env = {key: "replace-me" for key in secret}
    env["AGORA_APP_ID"] = "0123456789abcdef0123456789abcdef"
    env["AGORA_APP_CERTIFICATE"] = "5CFd2fd1755d40ecb72977518be15d3b"
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used <= set(secret), f"the declaration needs {sorted(used - set(secret))} from the Secret"
    return path, env


def test_the_mounted_declaration_is_valid_and_mints_tokens(tmp_path: Path) -> None:
    path, env = _mounted(tmp_path)
    desired = config.load([str(path)], env)
    assert desired.settings.app_certificate and desired.settings.token_ttl == 86400
    assert all("token" not in a.properties for a in desired.agents)


def test_the_mounted_declaration_plans_against_the_emulator(
    tmp_path: Path, emu: Emulator, api_env: dict[str, str], run: Any, monkeypatch: Any
) -> None:
    path, env = _mounted(tmp_path)
    for key, value in env.items():
        if not key.startswith("AGORA_CUSTOMER_"):  # the emulator's credentials come from api_env
            monkeypatch.setenv(key, value)
    result = run("plan", str(path), "--endpoint", emu.url, "--format", "json", "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert [c["action"] for c in doc["changes"]] == ["create"]
    assert env["AGORA_APP_CERTIFICATE"] not in result.output


def _served_metric_names() -> set[str]:
    class Source:
        clock = staticmethod(lambda: 0.0)

        def snapshot(self) -> LoopStats:
            s = LoopStats()
            s.changes[("agent", "restart", "ok")] = 1
            s.api = {("join", "200"): 1}
            s.agents = {"RUNNING": 1}
            return s

        def health(self) -> tuple[bool, dict[str, Any]]:
            return True, {}

    text = observe.render_metrics(Source()).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_dashboard_queries_only_served_metrics() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"agora_reconciler_[a-z_]+", expr)}
    served = _served_metric_names()
    assert used == served, (sorted(used - served), sorted(served - used))  # only served metrics, and each has a panel
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))
