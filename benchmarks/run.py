"""Scale and latency benchmarks against `emulator serve` over loopback. Prints a Markdown table.

    python benchmarks/run.py [--quick]

Each scenario runs the real CLI as a child process (wall time, its own CPU time and peak RSS from
`wait4`) against a real emulator process with an injected per-request latency, and counts the API
requests from the emulator's request log. "minimum" is the fewest requests the API allows:
1 phone-numbers list + per app max(1, ceil(live agents / 100)) agents.list pages for a plan, plus
the writes for an apply. Results go to stdout and to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler import config  # noqa: E402
from reconciler.diff import applied_agent_essence, applied_phone_essence  # noqa: E402
from reconciler.ledger import FileBackend, Ledger  # noqa: E402

CUSTOMER_ID, CUSTOMER_SECRET = "bench", "bench-secret"
APPS = ("bench-app-1", "bench-app-2", "bench-app-3")
PIPELINES = ("pl_demo_support", "pl_demo_sales")


@dataclass
class Row:
    scenario: str
    size: str
    requests: int
    minimum: int
    wall: float
    cpu: float
    rss_mb: float
    note: str = ""

    def markdown(self) -> str:
        ratio = f"{self.requests / self.minimum:.2f}" if self.minimum else "-"
        return f"| {self.scenario} | {self.size} | {self.requests} | {self.minimum} | {ratio} | {self.wall:.2f} s | {self.cpu:.2f} s | {self.rss_mb:.0f} MB | {self.note} |"


# --------------------------------------------------------------------------- the emulator
class Emulator:
    @classmethod
    def attach(cls, url: str) -> Emulator:
        self = cls.__new__(cls)
        self.url, self.http = url, requests.Session()
        return self

    def __init__(self) -> None:
        env = {**os.environ, "AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.http = requests.Session()

    def admin(self, method: str, route: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.url}/_emulator/{route}", json=body, timeout=600)
        response.raise_for_status()
        return response.json()

    def reset(self, latency_ms: float) -> None:
        self.admin("POST", "reset")
        if latency_ms:
            self.admin("POST", "faults", {"latency_ms": latency_ms})

    def requests_made(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.admin("GET", "requests")["requests"]
        return result

    def clear_log(self) -> None:
        self.admin("DELETE", "requests")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- workloads
def declaration(numbers: int, agents: int, *, changed_pct: float = 0.0) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": 1, "settings": {"state": "state.json"}, "phone_numbers": [], "agents": []}
    changed = int(numbers * changed_pct / 100)
    for i in range(numbers):
        pipeline = PIPELINES[(i + (1 if i < changed else 0)) % 2]
        doc["phone_numbers"].append(
            {
                "phone_number": f"+1415{i:07d}",
                "provider": "byo",
                "label": f"line {i}",
                "inbound_config": {"allowed_addresses": ["112.126.15.64/27"], "pipeline_id": pipeline},
                "outbound_config": {"address": "sip.example.com", "transport": "tls", "pipeline_id": PIPELINES[i % 2]},
            }
        )
    for i in range(agents):
        doc["agents"].append(
            {
                "name": f"agent-{i}",
                "app_id": APPS[i % len(APPS)],
                "preset": "deepgram_nova_3,openai_gpt_4o_mini",
                "properties": {
                    "channel": f"room-{i}",
                    "token": "${BENCH_TOKEN}",
                    "agent_rtc_uid": "1001",
                    "remote_rtc_uids": ["*"],
                    "idle_timeout": 0,
                    "llm": {"params": {"model": "gpt-4o-mini"}},
                },
            }
        )
    return doc


def write_project(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "agora.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def make_in_sync(emu: Emulator, folder: Path, numbers: int, agents: int) -> Path:
    """Seed the emulator and write the ledger as if `apply` had run (fast, for big sizes).

    Runs in a child process: this harness must stay small, because a child forked from it starts
    with its memory and `ru_maxrss` would report the harness's peak instead of the CLI's."""
    subprocess.run([sys.executable, __file__, "--prepare", emu.url, str(folder), str(numbers), str(agents)], check=True, cwd=ROOT)
    return folder / "agora.yaml"


def _prepare(url: str, folder: Path, numbers: int, agents: int) -> None:
    emu = Emulator.attach(url)
    path = write_project(folder, declaration(numbers, agents))
    desired = config.load([str(path)], {"BENCH_TOKEN": "bench-token"})
    seed_numbers = []
    for spec in desired.phone_numbers:
        body = spec.import_body()
        body["inbound_config"]["pipeline_id"] = spec.inbound_pipeline_id
        body["outbound_config"]["pipeline_id"] = spec.outbound_pipeline_id
        seed_numbers.append(body)
    seed_agents = [
        {"app_id": a.app_id, "name": f"{a.name}-00000000", "properties": dict(a.properties), "preset": a.preset} for a in desired.agents
    ]
    ids = emu.admin("POST", "seed", {"phone_numbers": seed_numbers, "agents": seed_agents})["agent_ids"]
    ledger = Ledger()
    for spec in desired.phone_numbers:
        ledger.resources[str(spec.address)] = {
            "kind": "phone_number",
            "applied": applied_phone_essence(spec, ledger.salt),
            "protect": False,
        }
    now = int(time.time())
    for spec, agent_id in zip(desired.agents, ids, strict=True):
        ledger.resources[str(spec.address)] = {
            "kind": "agent",
            "app_id": spec.app_id,
            "agent_id": agent_id,
            "instance_name": f"{spec.name}-00000000",
            "channel": spec.channel,
            "pending": False,
            "applied": applied_agent_essence(spec, ledger.salt),
            "started_at": now,
            "restarts": 0,
        }
    FileBackend(folder / "state.json").save(ledger, 0)


def variant_minimum(agents: int, variants: tuple[str, ...]) -> int:
    """The fewest requests of an in-sync plan when the API takes one state per query and/or pages
    of 20: every alive state (IDLE, STARTING, RUNNING, RECOVERING) is its own query."""
    page = 20 if "page-limit-20" in variants else 100
    per_app = [agents // len(APPS) + (1 if i < agents % len(APPS) else 0) for i in range(len(APPS))]
    if "single-state" in variants:  # all agents are RUNNING: the 3 other states answer one empty page each
        return 1 + sum(max(1, math.ceil(n / page)) + 3 for n in per_app)
    return 1 + sum(max(1, math.ceil(n / page)) for n in per_app)


VARIANT_SETS: tuple[tuple[str, ...], ...] = (("single-state",), ("page-limit-20",), ("single-state", "page-limit-20"))
VARIANTS_BEGIN = "<!-- variants: python benchmarks/run.py --variants -->"
VARIANTS_END = "<!-- /variants -->"


def plan_minimum(agents: int) -> int:
    per_app = [agents // len(APPS) + (1 if i < agents % len(APPS) else 0) for i in range(len(APPS))]
    return 1 + sum(max(1, math.ceil(n / 100)) for n in per_app)


# --------------------------------------------------------------------------- running the CLI
def run_cli(emu: Emulator, *args: str) -> tuple[float, float, float, int]:
    """Run the CLI; returns wall seconds, CPU seconds, peak RSS MB, exit code."""
    env = {
        **os.environ,
        "AGORA_ENDPOINT": emu.url,
        "AGORA_CUSTOMER_ID": CUSTOMER_ID,
        "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET,
        "BENCH_TOKEN": "bench-token",
        "NO_COLOR": "1",
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 2):
        assert proc.stderr is not None
        raise RuntimeError(f"{args} exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def bench_plan(
    emu: Emulator, work: Path, numbers: int, agents: int, latency: float, *, changed_pct: float = 0.0, variants: tuple[str, ...] = ()
) -> Row:
    emu.reset(latency)
    folder = work / f"plan-{numbers}-{agents}-{latency}-{changed_pct}-{'-'.join(variants)}"
    path = make_in_sync(emu, folder, numbers, agents)
    if variants:
        emu.admin("POST", "config", {"variants": list(variants)})
    if changed_pct:  # written by a child, like every big document (keeps this process small)
        subprocess.run(
            [sys.executable, __file__, "--write", str(folder), str(numbers), str(agents), str(changed_pct)], check=True, cwd=ROOT
        )
    emu.clear_log()
    wall, cpu, rss, code = run_cli(emu, "plan", str(path), "--detailed-exitcode")
    log = emu.requests_made()
    made = len(log)
    minimum = variant_minimum(agents, variants) if variants else plan_minimum(agents)
    expected_code = 2 if changed_pct else 0
    ideal = minimum * latency / 1000 + cpu
    note = (
        f"exit {code} (want {expected_code}); wall/(min seq x latency + CPU) = {wall / ideal:.2f}"
        if latency
        else f"exit {code} (want {expected_code})"
    )
    label = f"plan, {changed_pct:g}% changed" if changed_pct else "plan, in sync"
    if variants:
        refused = sum(1 for r in log if r["status"] == 400)
        label += f" ({' + '.join(variants)})"
        note = f"exit {code} (want {expected_code}); HTTP 400 x {refused} while the query form was learned"
    return Row(f"{label}, {latency:g} ms", f"{numbers} numbers, {agents} agents", made, minimum, wall, cpu, rss, note)


def bench_apply(emu: Emulator, work: Path, numbers: int, agents: int, latency: float, parallelism: int) -> Row:
    emu.reset(latency)
    folder = work / f"apply-{numbers}-{agents}-{parallelism}"
    path = write_project(folder, declaration(numbers, agents))
    wall, cpu, rss, code = run_cli(emu, "apply", str(path), "--auto-approve", "--parallelism", str(parallelism), "-q")
    made = emu.requests_made()
    writes = [r for r in made if r["method"] != "GET"]
    minimum = numbers * 2 + agents + plan_minimum(0)
    ideal = len(made) * latency / 1000 / parallelism
    note = f"exit {code}; {len(writes)} writes; ideal {ideal:.2f} s; wall/ideal = {wall / ideal:.2f}" if ideal else f"exit {code}"
    return Row(
        f"apply, parallelism {parallelism}, {latency:g} ms", f"{numbers} creates, {agents} starts", len(made), minimum, wall, cpu, rss, note
    )


def bench_validate(work: Path, numbers: int) -> Row:
    folder = work / f"validate-{numbers}"
    subprocess.run([sys.executable, __file__, "--write", str(folder), str(numbers), "0"], check=True, cwd=ROOT)  # keeps this process small
    path = folder / "agora.yaml"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "validate", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    return Row(
        "validate",
        f"{numbers} numbers",
        0,
        0,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        f"exit {os.waitstatus_to_exitcode(status)}",
    )


BASELINE = r"""
import json, os, sys, time
from agora_agent import Agora, Area
declared = json.load(open(sys.argv[1]))
client = Agora(area=Area.US, app_id="a" * 32, app_certificate="c" * 32, customer_id=os.environ["CID"], customer_secret=os.environ["CSECRET"])
drift = 0
for n in declared["numbers"]:
    live = client.phone_numbers.get(n["phone_number"])
    if live.label != n["label"]:
        drift += 1
for app in declared["apps"]:
    for agent in client.agents.list(app, from_time=0, state="1,2,5"):
        pass
print(drift)
"""


def bench_baseline(emu: Emulator, work: Path, numbers: int, agents: int, latency: float) -> Row:
    """What a user writes without the tool: GET each number with the SDK, page agents with its pager."""
    emu.reset(latency)
    folder = work / f"baseline-{numbers}"
    make_in_sync(emu, folder, numbers, agents)
    spec = folder / "declared.json"
    spec.write_text(
        json.dumps({"numbers": [{"phone_number": f"+1415{i:07d}", "label": f"line {i}"} for i in range(numbers)], "apps": list(APPS)})
    )
    script = folder / "baseline.py"
    script.write_text(BASELINE)
    emu.clear_log()
    env = {**os.environ, "AGORA_AGENTS_API_BASE_URL": emu.url, "CID": CUSTOMER_ID, "CSECRET": CUSTOMER_SECRET}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(spec)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        raise RuntimeError(proc.stderr.read().decode()[-2000:])
    made = len(emu.requests_made())
    return Row(
        f"baseline SDK script, {latency:g} ms",
        f"{numbers} numbers, {agents} agents",
        made,
        plan_minimum(agents),
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
    )


def bench_emulator(emu: Emulator, seconds: float = 3.0) -> str:
    """List calls per second the emulator serves (two client threads, keep-alive)."""
    from concurrent.futures import ThreadPoolExecutor

    emu.reset(0)
    emu.admin(
        "POST",
        "seed",
        {
            "phone_numbers": [
                {"provider": "byo", "phone_number": f"+1555{i:07d}", "label": "x", "inbound_config": {}, "outbound_config": {}}
                for i in range(100)
            ]
        },
    )
    token = base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}

    def worker() -> int:
        session = requests.Session()
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            session.get(f"{emu.url}/api/conversational-ai-agent/v2/phone-numbers", headers=headers, timeout=10).raise_for_status()
            count += 1
        return count

    with ThreadPoolExecutor(2) as pool:
        total = sum(pool.map(lambda _: worker(), range(2)))
    return f"{total / seconds:.0f} phone-numbers list calls/s (100 numbers, 2 client threads)"


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run (< 1 minute)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"))
    parser.add_argument("--variants", action="store_true", help="only the in-sync plan under each list variant (updates its section)")
    parser.add_argument("--prepare", nargs=4, metavar=("URL", "FOLDER", "NUMBERS", "AGENTS"), help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs="+", metavar="FOLDER NUMBERS AGENTS [CHANGED_PCT]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        folder, numbers, agents, *changed = args.write
        write_project(Path(folder), declaration(int(numbers), int(agents), changed_pct=float(changed[0]) if changed else 0.0))
        return
    if args.prepare:
        url, folder, numbers, agents = args.prepare
        _prepare(url, Path(folder), int(numbers), int(agents))
        return
    if args.variants:
        variants_section(Path(args.out))
        return
    emu = Emulator()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
            work = Path(tmp)
            throughput = bench_emulator(emu, 1.0 if args.quick else 3.0)
            sizes = [(200, 30)] if args.quick else [(1000, 100), (10000, 1000)]
            for numbers, agents in sizes:
                for latency in (0.0, 20.0):
                    rows.append(bench_plan(emu, work, numbers, agents, latency))
                rows.append(bench_plan(emu, work, numbers, agents, 20.0, changed_pct=1.0))
            rows.append(bench_baseline(emu, work, *sizes[0], 20.0))
            applies = [(100, 10, (8,))] if args.quick else [(1000, 100, (1, 4, 8, 16))]
            for numbers, agents, levels in applies:
                for level in levels:
                    rows.append(bench_apply(emu, work, numbers, agents, 20.0, level))
            rows.append(bench_validate(work, 1000 if args.quick else 10000))
    finally:
        emu.stop()
    ours = next(r for r in rows if r.scenario == "plan, in sync, 20 ms")
    base = next(r for r in rows if r.scenario.startswith("baseline"))
    header = [
        "# agora-reconciler benchmarks",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()} ({platform.system()} {platform.machine()}); "
        f"{'quick' if args.quick else 'full'} run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Emulator throughput: {throughput}.",
        "",
        "| scenario | size | requests | minimum | requests/min | wall | CPU (tool) | peak RSS | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    footer = [
        "",
        f"Ours vs the baseline SDK script ({base.size}, 20 ms): requests {ours.requests} vs {base.requests} "
        f"(ratio {ours.requests / base.requests:.3f}); wall {ours.wall:.2f} s vs {base.wall:.2f} s (ratio {ours.wall / base.wall:.3f}). "
        "The baseline sees only labels; it cannot tell bindings, agent liveness or ownership.",
    ]
    text = "\n".join(header + [r.markdown() for r in rows] + footer) + "\n"
    print(text)
    previous = Path(args.out).read_text() if Path(args.out).exists() else ""
    if VARIANTS_BEGIN in previous:  # measured separately (--variants): kept
        text += "\n" + previous[previous.index(VARIANTS_BEGIN) :]
    Path(args.out).write_text(text)


def variants_section(out: Path, numbers: int = 1000, agents: int = 100, latency: float = 20.0) -> None:
    """The request count of an in-sync plan under each agents.list variant, as its own section."""
    emu = Emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
            rows = [bench_plan(emu, Path(tmp), numbers, agents, latency)]
            rows += [bench_plan(emu, Path(tmp), numbers, agents, latency, variants=v) for v in VARIANT_SETS]
    finally:
        emu.stop()
    lines = [
        VARIANTS_BEGIN,
        "## In-sync plan under the agents.list variants",
        "",
        f"{agents} agents in {len(APPS)} apps, {numbers} numbers, {latency:g} ms per request; "
        f"run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. The sweep asks for the 4 alive states "
        "(IDLE, STARTING, RUNNING, RECOVERING); the minimum assumes the accepted query form is known. "
        "A refused form costs one 400, once per run: one sweep probes while the others wait for its first page.",
        "",
        "| scenario | size | requests | minimum | requests/min | wall | CPU (tool) | peak RSS | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *[r.markdown() for r in rows],
        VARIANTS_END,
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    text = out.read_text() if out.exists() else ""
    if VARIANTS_BEGIN in text:
        text = text[: text.index(VARIANTS_BEGIN)].rstrip("\n") + "\n"
    out.write_text(text + "\n" + section)


if __name__ == "__main__":
    main()
