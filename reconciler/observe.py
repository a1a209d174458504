"""`/healthz` and `/metrics` for the reconcile loop: the only module that imports `prometheus_client`.

`serve(listen, source)` starts a small threaded HTTP server on `HOST:PORT`. Both answers are
computed from `source` (the `Loop`) at request time: `/healthz` is 200 with a JSON status while
the last successful cycle is at most three intervals old and 503 with a JSON `reason` otherwise;
`/metrics` renders the loop's statistics in the Prometheus text format. Nothing here decides
anything about reconciling.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "agora_reconciler"


class Source(Protocol):
    """What the server reads: the `Loop` (its `snapshot()` is a `loop.LoopStats`; observe does not
    import the loop, the two are independent layers wired together by the CLI)."""

    clock: Callable[[], float]

    def snapshot(self) -> Any: ...

    def health(self) -> tuple[bool, dict[str, Any]]: ...


class LoopCollector(Collector):
    """Prometheus metrics from a snapshot of the loop's statistics, taken at scrape time."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        s = self.source.snapshot()
        now = self.source.clock()
        cycles = CounterMetricFamily(f"{PREFIX}_cycles", "Reconcile cycles by outcome.", labels=["outcome"])
        for outcome in sorted(set(s.cycles) | {"success", "partial", "standby", "locked", "refused", "error"}):
            cycles.add_metric([outcome], s.cycles.get(outcome, 0))
        yield cycles
        changes = CounterMetricFamily(
            f"{PREFIX}_changes", "Changes applied by kind, action and outcome.", labels=["kind", "action", "outcome"]
        )
        for (kind, action, outcome), n in sorted(s.changes.items()):
            changes.add_metric([kind, action, outcome], n)
        yield changes
        api = CounterMetricFamily(f"{PREFIX}_api_requests", "Agora API answers by endpoint and HTTP status.", labels=["endpoint", "status"])
        for (endpoint, status), n in sorted(s.api.items()):
            api.add_metric([endpoint, status], n)
        yield api
        agents = GaugeMetricFamily(
            f"{PREFIX}_managed_agents",
            "Agents in the ledger by status, as the last cycle read the account (PENDING: never started).",
            labels=["status"],
        )
        for status, n in sorted(s.agents.items()):
            agents.add_metric([status], n)
        yield agents
        yield CounterMetricFamily(f"{PREFIX}_agent_restarts", "Agents restarted after they stopped.", value=s.restarts)
        yield GaugeMetricFamily(f"{PREFIX}_crash_looping_agents", "Agents that failed 5 times in a row.", value=len(s.crash_looping))
        renewals = CounterMetricFamily(f"{PREFIX}_token_renewals", "Minted token renewals by outcome.", labels=["outcome"])
        for outcome in sorted(set(s.token_renewals) | {"ok", "failed"}):
            renewals.add_metric([outcome], s.token_renewals.get(outcome, 0))
        yield renewals
        since = now - (s.last_success if s.last_success is not None else s.started_at)
        yield GaugeMetricFamily(
            f"{PREFIX}_seconds_since_last_successful_cycle",
            "Seconds since the last successful cycle (since the start when none succeeded yet).",
            value=max(0.0, since),
        )
        yield GaugeMetricFamily(f"{PREFIX}_ledger_serial", "Serial of the ledger after the last cycle.", value=s.ledger_serial)
        yield GaugeMetricFamily(
            f"{PREFIX}_replica_active",
            "1 while this replica acts (it leads the replicas on a PostgreSQL ledger, or is alone), 0 on standby.",
            value=0 if s.role == "standby" else 1,
        )


def render_metrics(source: Source) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoopCollector(source))
    return generate_latest(registry)


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9090` for IPv6); ValueError with a readable message otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:9090, or 0.0.0.0:9090 in a container)")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Server:
    httpd: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve(listen: str, source: Source) -> Server:
    """Serve /healthz and /metrics in a daemon thread until `close()`."""
    host, port = parse_listen(listen)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok, detail = source.health()
                self._send(200 if ok else 503, "application/json", json.dumps(detail, sort_keys=True).encode() + b"\n")
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, render_metrics(source))
            else:
                self._send(404, "application/json", b'{"error": "not found: try /healthz or /metrics"}\n')

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
            return

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="observe", daemon=True)
    thread.start()
    return Server(httpd, thread)
