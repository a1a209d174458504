"""The apply floor: the straightforward script that creates a declaration's numbers, measured beside the tool.

    python benchmarks/floor_apply.py CONFIG JOURNAL ENDPOINT PARALLELISM   (credentials from AGORA_CUSTOMER_ID/SECRET)

libyaml load of the declaration; `PARALLELISM` threads, each with its own keep-alive `http.client`
connection (the least CPU per call Python offers: no requests, no urllib3), take
the numbers in order and for each one: append a "pending" line to `JOURNAL` and `fdatasync` it
(the one durability step ownership needs before `POST add`: a number imported by a run that dies
is still known), `POST` the import, `PATCH` both pipeline bindings, append the "done" line (written
and synced by whichever thread's pending line comes next, or at the end). No plan, no checks, no
secrets handling: what any implementation that keeps that guarantee must at least spend.
Prints the number of writes; `run.py` runs it in the same run as the tool, against the same emulator.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import yaml


class Journal:
    """Lines appended to one file; `sync()` makes every line so far durable."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.lock = threading.Lock()
        self.unsynced = False

    def add(self, record: dict[str, Any], *, sync: bool) -> None:
        with self.lock:
            os.write(self.fd, json.dumps(record).encode() + b"\n")
            self.unsynced = True
            if sync:
                os.fdatasync(self.fd)
                self.unsynced = False

    def close(self) -> None:
        if self.unsynced:
            os.fdatasync(self.fd)
        os.close(self.fd)


def main(config: str, journal_path: str, endpoint: str, parallelism: int) -> int:
    with open(config, encoding="utf-8") as fh:
        numbers = yaml.load(fh, Loader=yaml.CSafeLoader).get("phone_numbers") or []
    token = base64.b64encode(f"{os.environ['AGORA_CUSTOMER_ID']}:{os.environ['AGORA_CUSTOMER_SECRET']}".encode()).decode()
    origin = urlsplit(endpoint)
    api = origin.path.rstrip("/") + "/api/conversational-ai-agent/v2/phone-numbers"
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json", "Accept": "application/json"}
    journal = Journal(journal_path)
    work: Iterator[dict[str, Any]] = iter(numbers)
    take = threading.Lock()
    writes = [0] * parallelism
    failed: list[str] = []

    def worker(slot: int) -> None:
        kind = http.client.HTTPSConnection if origin.scheme == "https" else http.client.HTTPConnection
        conn = kind(origin.netloc, timeout=60)
        while True:
            with take:
                number = next(work, None)
            if number is None:
                return
            bindings = {k: {"pipeline_id": number[k].get("pipeline_id")} for k in ("inbound_config", "outbound_config")}
            body = {k: v for k, v in number.items() if k not in ("inbound_config", "outbound_config")}
            for key in ("inbound_config", "outbound_config"):
                body[key] = {k: v for k, v in number[key].items() if k != "pipeline_id"}
            journal.add({"pending": number["phone_number"]}, sync=True)
            for method, url, doc in (("POST", api, body), ("PATCH", f"{api}/{number['phone_number']}", bindings)):
                conn.request(method, url, body=json.dumps(doc).encode(), headers=headers)
                response = conn.getresponse()
                answer = response.read()
                if response.status >= 400:
                    failed.append(f"{method} {number['phone_number']}: HTTP {response.status}")
                    return
                json.loads(answer)
                writes[slot] += 1
            journal.add({"done": number["phone_number"]}, sync=False)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(parallelism)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    if failed:
        print("\n".join(failed[:5]), file=sys.stderr)
        return 1
    print(sum(writes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
