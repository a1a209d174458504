"""Scale and latency benchmarks against `emulator serve` over loopback. Prints Markdown tables.

    python benchmarks/run.py [--quick]
    python benchmarks/run.py --plans [--sizes 1000,10000] [--repeats 3]   (only the plan table and the loop cycle, printed)
    python benchmarks/run.py --applies [--repeats 3]   (only the two apply tables, each row the median run, printed)

Each scenario runs the real CLI as a child process (wall time, its own CPU time and peak RSS from
`wait4`) against a real emulator process with an injected per-request latency, and counts the API
requests from the emulator's request log. Plans are compared with `floor.py` (the straightforward
script doing the same work) run in the same run on the same data; every plan and floor figure is
the median of several runs (the machine is shared). Applies under latency are compared with
`floor_apply.py` (the straightforward script creating the same numbers, with the same durable
pending record before each import) the same way. Applies count the bytes written to the ledger
(`meter.py`). Results go to stdout and to benchmarks/results.md. The tool's modules are
byte-compiled first, as an installed package's are (pip compiles them at install; the floor's
libraries are), so that no run pays for compiling its source (PYTHONDONTWRITEBYTECODE would
otherwise make every run of an editable checkout compile every module again).
"""

from __future__ import annotations

import argparse
import base64
import compileall
import itertools
import json
import math
import os
import platform
import statistics
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
from reconciler.observed import observed_form  # noqa: E402

CUSTOMER_ID, CUSTOMER_SECRET = "bench", "bench-secret"
APPS = ("bench-app-1", "bench-app-2", "bench-app-3")
PIPELINES = ("pl_demo_support", "pl_demo_sales")


@dataclass
class Run:
    """One child process: wall and CPU seconds, peak RSS in MB, exit code."""

    wall: float
    cpu: float
    rss: float
    code: int


@dataclass
class Row:
    """A row of the variants section (`--variants`)."""

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


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.wall for r in runs),
        statistics.median(r.cpu for r in runs),
        statistics.median(r.rss for r in runs),
        runs[-1].code,
    )


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

    def phone_numbers(self) -> list[dict[str, Any]]:
        """The account's numbers as the API lists them (what `apply` records as observed)."""
        token = base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode()
        response = self.http.get(
            f"{self.url}/api/conversational-ai-agent/v2/phone-numbers", headers={"Authorization": f"Basic {token}"}, timeout=600
        )
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def requests_made(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.admin("GET", "requests")["requests"]
        return result

    def clear_log(self) -> None:
        self.admin("DELETE", "requests")

    def cpu(self) -> float:
        """CPU seconds the emulator process has used so far (from /proc; 0 where there is none)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
    ids: list[str] = []
    for start in range(0, max(len(seed_numbers), len(seed_agents)), 10000):  # the emulator takes bodies up to 16 MB
        chunk = {"phone_numbers": seed_numbers[start : start + 10000], "agents": seed_agents[start : start + 10000]}
        ids += emu.admin("POST", "seed", chunk)["agent_ids"]
    ledger = Ledger()
    # as `apply` records it: what was applied, and what the API showed right after (observed)
    live = {item["phone_number"]: item for item in emu.phone_numbers()}
    for spec in desired.phone_numbers:
        ledger.resources[str(spec.address)] = {
            "kind": "phone_number",
            "applied": applied_phone_essence(spec, ledger.salt),
            "observed": observed_form(spec, live[spec.phone_number], ledger.salt),
            "protect": False,
            "updated_at": int(time.time()),
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


# --------------------------------------------------------------------------- running children
def cli_env(emu: Emulator | None) -> dict[str, str]:
    env = {**os.environ, "AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET, "BENCH_TOKEN": "bench-token"}
    env["NO_COLOR"] = "1"
    if emu is not None:
        env["AGORA_ENDPOINT"] = emu.url
    return env


def run_child(argv: list[str], env: dict[str, str], *, ok: tuple[int, ...] = (0, 2)) -> Run:
    """Run a child; wall seconds, its CPU seconds and peak RSS (from `wait4`), exit code."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stderr is not None
    stderr = proc.stderr.read()  # drained while it runs: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code not in ok:
        raise RuntimeError(f"{argv[1:4]} exited {code}: {stderr.decode()[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code)


def run_cli(emu: Emulator | None, *args: str) -> Run:
    return run_child([sys.executable, "-m", "reconciler", *args], cli_env(emu))


def run_floor(emu: Emulator, folder: Path) -> Run:
    """floor.py with the cyclic collector off (the tool pauses it for its load too: a floor is a minimum)."""
    code = (
        f"import gc, runpy, sys; gc.disable(); sys.argv = {['floor', str(folder / 'agora.yaml'), str(folder / 'state.json'), emu.url]!r}; "
    )
    code += f"runpy.run_path({str(ROOT / 'benchmarks' / 'floor.py')!r}, run_name='__main__')"
    return run_child([sys.executable, "-c", code], cli_env(emu), ok=(0,))


# --------------------------------------------------------------------------- plans vs the floor
@dataclass
class PlanRow:
    numbers: int
    agents: int
    requests: int
    minimum: int
    tool: Run
    floor: Run
    wall_20ms: float | None

    def markdown(self) -> str:
        ratio = self.tool.cpu / self.floor.cpu
        per_k = self.tool.cpu / (self.numbers / 1000)
        wall = f"{self.wall_20ms:.2f} s" if self.wall_20ms is not None else "-"
        return (
            f"| {self.numbers:,} numbers + {self.agents:,} agents | {self.requests} ({self.minimum}) | {self.tool.cpu:.2f} s | "
            f"{self.floor.cpu:.2f} s | **{ratio:.2f}x** | {self.tool.rss:.0f} MB | {self.floor.rss:.0f} MB | {per_k:.3f} s | "
            f"{self.tool.wall:.2f} s | {wall} |"
        )


PLAN_HEADER = [
    "| plan, in sync | requests (minimum) | CPU (tool) | CPU (floor) | tool / floor | peak RSS (tool) | peak RSS (floor) | CPU per 1,000 numbers | wall at 0 ms | wall at 20 ms |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def bench_plan(emu: Emulator, work: Path, numbers: int, agents: int, repeats: int) -> PlanRow:
    emu.reset(0)
    folder = work / f"plan-{numbers}-{agents}"
    path = make_in_sync(emu, folder, numbers, agents)
    emu.clear_log()
    first = run_cli(emu, "plan", str(path), "--detailed-exitcode")
    if first.code != 0:
        raise RuntimeError(f"the in-sync plan of {numbers} numbers found changes")
    made = len(emu.requests_made())
    tool, floor = [first], []
    for i in range(repeats):  # interleaved, so both see the same machine load
        floor.append(run_floor(emu, folder))
        if i + 1 < repeats:
            tool.append(run_cli(emu, "plan", str(path), "--detailed-exitcode"))
    wall_20ms = None
    if numbers == 10000 or repeats == 1:
        emu.admin("POST", "faults", {"latency_ms": 20})
        wall_20ms = run_cli(emu, "plan", str(path), "--detailed-exitcode").wall
        emu.admin("DELETE", "faults")
    return PlanRow(numbers, agents, made, plan_minimum(agents), median_run(tool), median_run(floor), wall_20ms)


def bench_variant(emu: Emulator, work: Path, numbers: int, agents: int, latency: float, variants: tuple[str, ...] = ()) -> Row:
    """An in-sync plan's requests when the API reads the agents.list filters another way."""
    emu.reset(latency)
    folder = work / f"variant-{numbers}-{agents}-{latency}-{'-'.join(variants)}"
    path = make_in_sync(emu, folder, numbers, agents)
    if variants:
        emu.admin("POST", "config", {"variants": list(variants)})
    emu.clear_log()
    result = run_cli(emu, "plan", str(path), "--detailed-exitcode")
    log = emu.requests_made()
    minimum = variant_minimum(agents, variants) if variants else plan_minimum(agents)
    ideal = minimum * latency / 1000 + result.cpu
    note = f"exit {result.code} (want 0); wall/(min seq x latency + CPU) = {result.wall / ideal:.2f}"
    label = "plan, in sync"
    if variants:
        refused = sum(1 for r in log if r["status"] == 400)
        label += f" ({' + '.join(variants)})"
        note = f"exit {result.code} (want 0); HTTP 400 x {refused} while the query form was learned"
    return Row(
        f"{label}, {latency:g} ms", f"{numbers} numbers, {agents} agents", len(log), minimum, result.wall, result.cpu, result.rss, note
    )


def variants_section(out: Path, numbers: int = 1000, agents: int = 100, latency: float = 20.0) -> None:
    """The request count of an in-sync plan under each agents.list variant, as its own section."""
    emu = Emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
            rows = [bench_variant(emu, Path(tmp), numbers, agents, latency)]
            rows += [bench_variant(emu, Path(tmp), numbers, agents, latency, v) for v in VARIANT_SETS]
    finally:
        emu.stop()
    lines = [
        VARIANTS_BEGIN,
        "## In-sync plan under the agents.list variants",
        "",
        f"{agents} agents in {len(APPS)} apps, {numbers} numbers, {latency:g} ms per request; "
        f"run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (load average {os.getloadavg()[0]:.1f}: this section "
        "reports request counts; its wall times are only comparable with the table above on an idle machine). "
        "The sweep asks for the 4 alive states "
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


# --------------------------------------------------------------------------- applies
@dataclass
class LedgerRow:
    creates: int
    writes: int
    run: Run
    meter: dict[str, int]

    def markdown(self) -> str:
        total = self.meter["journal_bytes"] + self.meter["snapshot_bytes"]
        return (
            f"| {self.creates:,} number creates | {self.writes:,} | {self.meter['journal_writes']:,} appends, "
            f"{self.meter['journal_bytes'] / 1e6:.2f} MB | {self.meter['snapshot_writes']} snapshot(s), {self.meter['snapshot_bytes'] / 1e6:.2f} MB | "
            f"{total / self.creates:,.0f} B | {self.run.cpu:.2f} s | {self.run.cpu / self.writes * 1000:.2f} ms | {self.run.wall:.2f} s |"
        )


LEDGER_HEADER = [
    "| apply, 0 ms, parallelism 8 | API writes | journal | snapshot | ledger bytes per change | CPU (tool) | CPU per API write | wall |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


def bench_apply_ledger(emu: Emulator, work: Path, creates: int) -> LedgerRow:
    emu.reset(0)
    folder = work / f"apply-ledger-{creates}"
    path = write_project(folder, declaration(creates, 0))
    meter = folder / "meter.json"
    env = {**cli_env(emu), "LEDGER_METER": str(meter), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(ROOT / "benchmarks" / "meter.py"), "apply", str(path), "--auto-approve", "--parallelism", "8", "-q"]
    result = run_child(argv, env, ok=(0,))
    writes = len([r for r in emu.requests_made() if r["method"] != "GET"])
    return LedgerRow(creates, writes, result, json.loads(meter.read_text()))


@dataclass
class LatencyRow:
    creates: int
    parallelism: int
    requests: int
    writes: int
    run: Run
    latency_ms: float
    emulator_cpu: float
    floor: Run | None = None  # floor_apply.py on the same declaration against the same emulator
    runs: int = 1

    @property
    def ideal(self) -> float:
        return self.writes * self.latency_ms / 1000 / self.parallelism

    def markdown(self) -> str:
        busy = self.run.cpu / self.run.wall / (os.cpu_count() or 1)
        floor = "-" if self.floor is None else f"{self.floor.wall:.2f} s = {self.floor.wall / self.ideal:.2f}x"
        return (
            f"| {self.creates:,} number creates, parallelism {self.parallelism} | {self.requests:,} | {self.writes:,} | {self.ideal:.2f} s | "
            f"{self.run.wall:.2f} s | **{self.run.wall / self.ideal:.2f}x** | {floor} | {self.run.cpu:.2f} s | {busy:.0%} | "
            f"{self.emulator_cpu:.2f} s |"
        )


LATENCY_HEADER = [
    "| apply, 20 ms per request | requests | writes | ideal (writes x 20 ms / parallelism) | wall | wall / ideal "
    "| floor (`floor_apply.py`) wall, / ideal | CPU (tool) | cores busy (tool) | CPU (emulator) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def run_floor_apply(emu: Emulator, path: Path, journal: Path, parallelism: int) -> Run:
    """floor_apply.py on the declaration at `path` (the emulator reset to the same latency first)."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "floor_apply.py"), str(path), str(journal), emu.url, str(parallelism)]
    return run_child(argv, cli_env(emu), ok=(0,))


def bench_apply_latency(emu: Emulator, work: Path, creates: int, parallelism: int, latency_ms: float, repeats: int = 1) -> LatencyRow:
    """The tool's apply and the floor, alternating, `repeats` times each on a fresh account: the
    tool's run of median wall time, and the floor's median wall time."""
    tools: list[LatencyRow] = []
    floors: list[Run] = []
    for i in range(repeats):
        folder = work / f"apply-latency-{creates}-{parallelism}-{i}"
        path = write_project(folder, declaration(creates, 0))
        emu.reset(latency_ms)
        floors.append(run_floor_apply(emu, path, folder / "floor-journal.jsonl", parallelism))
        emu.reset(latency_ms)
        before = emu.cpu()
        result = run_cli(emu, "apply", str(path), "--auto-approve", "--parallelism", str(parallelism), "-q")
        served = emu.cpu() - before
        made = emu.requests_made()
        writes = len([r for r in made if r["method"] != "GET"])
        tools.append(LatencyRow(creates, parallelism, len(made), writes, result, latency_ms, served))
    row = sorted(tools, key=lambda r: r.run.wall)[len(tools) // 2]
    row.floor = sorted(floors, key=lambda r: r.wall)[len(floors) // 2]
    row.runs = repeats
    return row


# --------------------------------------------------------------------------- start-up
def bench_startup(work: Path, repeats: int) -> list[str]:
    quickstart = ROOT / "examples" / "quickstart"
    rows = []
    for label, args in (("`validate examples/quickstart`", ["validate", str(quickstart)]), ("`--help`", ["--help"])):
        runs = median_run([run_cli(None, *args) for _ in range(repeats)])
        rows.append(f"| {label} | {runs.wall:.3f} s | {runs.cpu:.3f} s | {runs.rss:.0f} MB |")
    folder = work / "validate-10000"
    subprocess.run([sys.executable, __file__, "--write", str(folder), "10000", "1000"], check=True, cwd=ROOT)
    big = median_run([run_cli(None, "validate", str(folder / "agora.yaml")) for _ in range(repeats)])
    rows.append(f"| `validate` of 10,000 numbers + 1,000 agents | {big.wall:.3f} s | {big.cpu:.3f} s | {big.rss:.0f} MB |")
    return rows


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


def bench_cycle(emu: Emulator, work: Path, plan: PlanRow) -> str:
    """Steady reconcile-loop cycles on the in-sync declaration of `plan`, against its cold plan."""
    folder = work / f"plan-{plan.numbers}-{plan.agents}"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cycle.py"), str(folder / "agora.yaml"), "4"],
        capture_output=True,
        text=True,
        env={**cli_env(emu), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cycle.py exited {out.returncode}: {out.stderr[-2000:]}")
    doc = json.loads(out.stdout)
    steady = statistics.median(doc["cycles"][1:])
    return (
        f"| {plan.numbers:,} numbers + {plan.agents:,} agents, unchanged | {doc['cycles'][0]:.2f} s | {steady:.2f} s | "
        f"{plan.tool.cpu:.2f} s | **{steady / plan.tool.cpu:.2f}x** |"
    )


def per_k_summary(plans: list[PlanRow]) -> str:
    """How CPU per 1,000 numbers varies across sizes, and what each further 1,000 numbers cost
    between consecutive sizes (the fixed start-up cancels out: constant means linear)."""
    per_k = [r.tool.cpu / (r.numbers / 1000) for r in plans]
    text = f"CPU per 1,000 numbers varies by {(max(per_k) / min(per_k) - 1) * 100:.0f} % across sizes"
    steps = [
        (a, b, (b.tool.cpu - a.tool.cpu) / ((b.numbers - a.numbers) / 1000)) for a, b in itertools.pairwise(plans) if b.numbers > a.numbers
    ]
    if steps:
        costs = [cost for _, _, cost in steps]
        shown = ", ".join(f"{cost:.3f} s ({a.numbers:,} -> {b.numbers:,})" for a, b, cost in steps)
        text += f"; each further 1,000 numbers (+100 agents) costs {shown}: {(max(costs) / min(costs) - 1) * 100:.0f} % apart"
    return text


# --------------------------------------------------------------------------- main
def compile_package() -> None:
    """Byte-compile reconciler/ as `pip install` does for an installed package (see the docstring)."""
    if not compileall.compile_dir(str(ROOT / "reconciler"), quiet=1):
        raise RuntimeError("byte-compiling reconciler/ failed")


def plans_only(sizes: list[tuple[int, int]], repeats: int) -> None:
    """`--plans`: the plan table (and the loop cycle when 10,000 numbers are among the sizes), printed only."""
    emu = Emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
            plans, cycles = [], []
            for n, a in sizes:
                plans.append(bench_plan(emu, Path(tmp), n, a, repeats))
                if n == 10000:
                    cycles.append(bench_cycle(emu, Path(tmp), plans[-1]))
    finally:
        emu.stop()
    print(f"medians of {repeats} run(s); {per_k_summary(plans)}\n")
    print("\n".join([*PLAN_HEADER, *[r.markdown() for r in plans]]))
    if cycles:
        print("\n| reconcile loop | first cycle | later cycles (median of 3) | cold `plan` (CPU) | later cycle / cold plan |")
        print("|---|---:|---:|---:|---:|\n" + "\n".join(cycles))


def applies_only(repeats: int) -> None:
    """`--applies`: the two apply tables, each row the run of median wall time of `repeats`, printed only."""

    def median_of(rows: list[Any], key: Any) -> Any:
        return sorted(rows, key=key)[len(rows) // 2]

    emu = Emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
            work = Path(tmp)
            ledgers = [
                median_of([bench_apply_ledger(emu, work / str(i), n) for i in range(repeats)], lambda r: r.run.cpu) for n in (1000, 10000)
            ]
            latencies = [bench_apply_latency(emu, work, 3000, p, 20.0, repeats) for p in (8, 16)]
    finally:
        emu.stop()
    print(f"median of {repeats} run(s) each (by CPU for the ledger table, by wall for the latency table)\n")
    print("\n".join([*LEDGER_HEADER, *[r.markdown() for r in ledgers], "", *LATENCY_HEADER, *[r.markdown() for r in latencies]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each, for a CI smoke run (< 30 s)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"))
    parser.add_argument("--variants", action="store_true", help="only the in-sync plan under each list variant (updates its section)")
    parser.add_argument("--plans", action="store_true", help="only the plan table (and the loop cycle), printed, results.md untouched")
    parser.add_argument("--sizes", default="1000,10000,50000", help="with --plans: numbers per plan, comma-separated (agents: a tenth)")
    parser.add_argument("--applies", action="store_true", help="only the apply tables, printed, results.md untouched")
    parser.add_argument("--repeats", type=int, default=5, help="with --plans: runs per plan (medians); with --applies: runs per row")
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
    compile_package()
    if args.variants:
        variants_section(Path(args.out))
        return
    if args.plans:
        plans_only([(int(n), int(n) // 10) for n in args.sizes.split(",")], args.repeats)
        return
    if args.applies:
        applies_only(args.repeats)
        return
    quick = args.quick
    started = time.perf_counter()
    emu = Emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
            work = Path(tmp)
            throughput = bench_emulator(emu, 1.0 if quick else 3.0)
            sizes = [(200, 20), (1000, 100)] if quick else [(1000, 100), (10000, 1000), (50000, 5000)]
            plans, cycles = [], []
            for n, a in sizes:
                plans.append(bench_plan(emu, work, n, a, 1 if quick else 5))
                if n == (1000 if quick else 10000):  # while the emulator holds this size's account
                    cycles.append(bench_cycle(emu, work, plans[-1]))
            startup = bench_startup(work, 1 if quick else 5)  # before the applies: their request logs grow this process
            ledgers = [bench_apply_ledger(emu, work, n) for n in ((100, 400) if quick else (1000, 10000))]
            latency = [(100, 8)] if quick else [(3000, 8), (3000, 16)]
            latencies = [bench_apply_latency(emu, work, n, p, 20.0, 1 if quick else 3) for n, p in latency]
    finally:
        emu.stop()
    lines = [
        "# agora-reconciler benchmarks",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()} ({platform.system()} {platform.machine()}); "
        f"{'quick' if quick else 'full'} run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({time.perf_counter() - started:.0f} s). Emulator throughput: {throughput}.",
        "",
        "Plans: medians of " + ("1 run" if quick else "5 runs") + " each, tool and floor interleaved (`benchmarks/floor.py`: libyaml load, "
        "ledger JSON decode, the same requests, JSON decode, a plain comparison; collector off). "
        f"{per_k_summary(plans)}.",
        "",
        *PLAN_HEADER,
        *[r.markdown() for r in plans],
        "",
        *LEDGER_HEADER,
        *[r.markdown() for r in ledgers],
        "",
        "Applies at 20 ms per request: the tool and `benchmarks/floor_apply.py` (libyaml load, a durable pending line before "
        "each import, POST + PATCH over one keep-alive `http.client` connection per thread) alternating on a fresh account, "
        + ("1 run" if quick else "3 runs")
        + " each: the tool's run of median wall time, and the floor's median.",
        "",
        *LATENCY_HEADER,
        *[r.markdown() for r in latencies],
        "",
        "| start-up | wall | CPU | peak RSS |",
        "|---|---:|---:|---:|",
        *startup,
        "",
        "| reconcile loop (`reconciler/loop/`, mode heal) | first cycle | later cycles (median of 3) | cold `plan` (CPU, above) | later cycle / cold plan |",
        "|---|---:|---:|---:|---:|",
        *cycles,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    previous = Path(args.out).read_text() if Path(args.out).exists() else ""
    if VARIANTS_BEGIN in previous:  # measured separately (--variants): kept
        text += "\n" + previous[previous.index(VARIANTS_BEGIN) :]
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
