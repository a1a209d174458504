"""CPU of reconcile-loop cycles on an unchanged declaration, measured inside one process.

    python benchmarks/cycle.py CONFIG CYCLES   (endpoint and credentials from the environment)

Builds the loop as `agora-reconciler reconcile` does, runs CYCLES cycles back to back and prints
JSON: the process CPU before the first cycle (start-up and the first load), of the first cycle, and
of each later one (an unchanged declaration is not read again; each cycle still reads the ledger
and the live account and plans).
"""

from __future__ import annotations

import json
import sys
import time

started = time.process_time()

from reconciler import config, reconcile  # noqa: E402
from reconciler.cli.common import make_client  # noqa: E402
from reconciler.loop import Loop  # noqa: E402


def main(path: str, cycles: int) -> None:
    desired = config.load([path])
    flags = {"command": "agora-reconciler reconcile"}
    client = make_client(reconcile.resolve_options(desired, flags))
    loop = Loop([path], desired, lambda d: reconcile.Session.open(d, client, reconcile.resolve_options(d, flags)))
    ready = time.process_time()
    spent = []
    for _ in range(cycles):
        before = time.process_time()
        result = loop.cycle(raise_errors=True)
        spent.append(time.process_time() - before)
        if result.applied:
            raise SystemExit(f"the declaration was not in sync: {result.applied} change(s) applied")
    print(json.dumps({"start": ready - started, "cycles": spent}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
