"""The emulator's data file shared between processes (issue 10, item 11).

`emulator serve --data FILE` locks its file against a second writer; the in-process store of
`endpoint: local` reads and writes its file under the lock for every request, so overlapping
processes end with the union of their effects and never resurrect what the other deleted.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from reconciler.emulator import EmulatorAdapter, EmulatorApp, Store

from .conftest import basic_headers
from .e2e import Project, agent_spec, number_spec

WORKER = textwrap.dedent(
    """
    import sys
    import requests
    from reconciler.emulator import EmulatorAdapter, EmulatorApp, Store

    app = EmulatorApp(Store(sys.argv[1]), customer_id="local", customer_secret="local")
    session = requests.Session()
    session.mount("http://local/", EmulatorAdapter(app))
    base = "http://local/api/conversational-ai-agent/v2/phone-numbers"
    headers = {"Authorization": "Basic bG9jYWw6bG9jYWw="}
    print("ready", flush=True)
    for line in sys.stdin:
        verb, number = line.split()
        if verb == "delete":
            status = session.delete(f"{base}/{number}", headers=headers).status_code
        else:
            body = {"provider": "byo", "phone_number": number, "label": "new", "inbound_config": {}, "outbound_config": {}}
            status = session.post(base, json=body, headers=headers).status_code
        print(status, flush=True)
    """
)


def numbers(count: int, prefix: str = "+1415555") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(count)]


def seed_file(path: Path, phones: list[str]) -> None:
    store = Store(path)
    store.seed(
        {
            "phone_numbers": [
                {"provider": "byo", "phone_number": p, "label": "old", "inbound_config": {}, "outbound_config": {}} for p in phones
            ]
        }
    )


def worker(path: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def step(process: subprocess.Popen[str], verb: str, number: str) -> int:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(f"{verb} {number}\n")
    process.stdin.flush()
    return int(process.stdout.readline())


def test_two_processes_interleaving_deletes_and_creates_end_with_the_union(tmp_path: Path) -> None:
    data = tmp_path / ".agora-reconciler" / "local-api.json"
    old = numbers(300)
    seed_file(data, old)
    new_a, new_b = numbers(50, "+1628555"), numbers(50, "+1650555")
    a, b = worker(data), worker(data)
    try:
        # strict alternation, one request at a time: every step of one process follows a write of the other
        for i in range(150):
            assert step(a, "delete", old[i]) == 204
            assert step(b, "delete", old[150 + i]) == 204
            if i < 50:
                assert step(a, "add", new_a[i]) == 201
                assert step(b, "add", new_b[i]) == 201
    finally:
        for process in (a, b):
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)
    left = json.loads(data.read_text())["numbers"]
    assert sorted(left) == sorted(new_a + new_b), f"{len(set(left) & set(old))} deleted numbers were resurrected"


def test_the_in_process_store_sees_another_process_write(tmp_path: Path) -> None:
    data = tmp_path / "local-api.json"
    app = EmulatorApp(Store(data), customer_id="local", customer_secret="local")
    session = requests.Session()
    session.mount("http://local/", EmulatorAdapter(app))
    headers = basic_headers("local", "local")
    url = "http://local/api/conversational-ai-agent/v2/phone-numbers"
    assert session.get(url, headers=headers).json() == []
    other = worker(data)
    try:
        assert step(other, "add", "+14155550100") == 201
        assert [n["phone_number"] for n in session.get(url, headers=headers).json()] == ["+14155550100"]
        assert session.delete(f"{url}/+14155550100", headers=headers).status_code == 204
        assert step(other, "delete", "+14155550100") == 404, "the other process sees the delete"
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=30)


def test_a_corrupt_local_data_file_is_a_json_error_not_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "local-api.json"
    data.write_text("{broken")
    app = EmulatorApp(Store(data), customer_id="local", customer_secret="local")
    session = requests.Session()
    session.mount("http://local/", EmulatorAdapter(app))
    response = session.get("http://local/api/conversational-ai-agent/v2/phone-numbers", headers=basic_headers("local", "local"))
    assert response.status_code == 503 and "local-api.json is not valid JSON" in response.json()["description"]
    assert data.read_text() == "{broken", "the file is left for the user to repair"


def test_a_second_serve_on_the_same_data_file_fails_naming_the_holder(tmp_path: Path, serve_emulator: Any) -> None:
    data = tmp_path / "store.json"
    first = serve_emulator("--data", str(data))
    second = subprocess.run(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and second.stdout == "" and "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: ") and str(data) in line and f"pid {first.process.pid}" in line, line
    first.process.terminate()
    first.process.communicate(timeout=10)
    third = serve_emulator("--data", str(data))
    assert third.admin("GET", "health") == {"ok": True}, "the lock goes with its holder"


def _has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (Linux /proc): it is waiting on that lock."""
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except (FileNotFoundError, PermissionError):
        return False
    return str(path) in links


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see a process wait on the lock")
def test_two_local_applies_queued_on_the_ledger_lock_never_resurrect_deletes(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.numbers = [number_spec(f"+1415555{i:04d}") for i in range(120)]
    project.agents = []
    project.write()
    env = {**os.environ, **project.env(), "NO_COLOR": "1"}
    for key in ("AGORA_ENDPOINT", "AGORA_CUSTOMER_ID", "AGORA_CUSTOMER_SECRET", "AGORA_RECONCILER_STATE"):
        env.pop(key, None)
    apply = [sys.executable, "-m", "reconciler", "apply", str(project.path), "--endpoint", "local", "--auto-approve"]
    first = subprocess.run(apply, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr
    data = project.state.parent / "local-api.json"  # next to the ledger
    assert len(json.loads(data.read_text())["numbers"]) == 120
    project.numbers = []
    project.agents = [agent_spec("concierge")]
    project.write()
    lock_path = project.state.with_name(project.state.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # both applies open their local store, then queue on the ledger lock
    runs = [
        subprocess.Popen(
            [*apply, "--force", "--lock-timeout", "240"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(_has_open(run.pid, lock_path) for run in runs):  # an event, with a bound
            assert time.monotonic() < deadline and all(run.poll() is None for run in runs), "both applies should wait on the lock"
            time.sleep(0.05)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    store = json.loads(data.read_text())
    assert store["numbers"] == {}, f"{len(store['numbers'])} deleted numbers were resurrected"
    live = [a for a in store["agents"] if a["status"] in ("STARTING", "RUNNING")]
    assert len(live) == 1, "the second apply saw the first one's agent"
    plan = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", str(project.path), "--endpoint", "local", "--detailed-exitcode"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
