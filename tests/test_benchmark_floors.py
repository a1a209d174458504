"""The benchmark's apply floor does the work it claims, so a ratio against it means something:
every number imported and bound, a durable pending line before each import, a done line after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ("pl_demo_support", "pl_demo_sales")  # the emulator's demo pipelines


def test_floor_apply_imports_and_binds_every_number_and_journals_each(emu: Emulator, tmp_path: Path) -> None:
    numbers = [
        {
            "phone_number": f"+1415555{i:04d}",
            "provider": "byo",
            "label": f"line {i}",
            "inbound_config": {"allowed_addresses": ["112.126.15.64/27"], "pipeline_id": PIPELINES[i % 2]},
            "outbound_config": {"address": "sip.example.com", "transport": "tls", "pipeline_id": PIPELINES[(i + 1) % 2]},
        }
        for i in range(7)
    ]
    config = tmp_path / "agora.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "phone_numbers": numbers}))
    journal = tmp_path / "journal.jsonl"
    env = {"AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET, "PATH": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "floor_apply.py"), str(config), str(journal), emu.url, "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "14"
    live = emu.numbers()
    for i, number in enumerate(numbers):
        got = live[number["phone_number"]]
        assert got["label"] == f"line {i}"
        assert got["inbound_config"]["pipeline_id"] == PIPELINES[i % 2]
        assert got["outbound_config"]["pipeline_id"] == PIPELINES[(i + 1) % 2]
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for number in numbers:
        pending = lines.index({"pending": number["phone_number"]})
        assert lines.index({"done": number["phone_number"]}) > pending
    assert [m["method"] for m in emu.mutating()].count("POST") == 7
