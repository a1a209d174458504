"""Run the CLI as a real process that is SIGKILLed (or fails) at one exact point: deterministic crashes.

`python -m tests.reliability.crashpoint SPEC -- ARGS...` patches one function, then runs
`agora-reconciler ARGS...`. SPEC is `kill:<module>:<attr>` (SIGKILL when it is called),
`stop:<module>:<attr>` (SIGSTOP when it is first called, so a test can see the process frozen at
that exact point, look at what it holds, then kill it or let it go on with SIGCONT),
`term:<module>:<attr>:<n>` / `int:...` (at the n-th call of that method, SIGTERM / SIGINT to the
main thread, as from outside, then that call waits for the handler to have set its object's `stop` event before it
runs: the executor's `_apply`, so a signal lands mid-apply at an exact change),
`hold:<module>:<attr>:<n>` (the n-th call waits while the rest of the process goes on, so a test
can act at a state it observed with that call still in flight, e.g. kill the process: the
in-process form of a request the server has not answered; when it is reached the file named by the
environment variable CRASHPOINT_HELD is created, and the call goes on once the file named by
CRASHPOINT_RELEASE exists, never when that is unset),
`kill-replace:<suffix>` (SIGKILL when `os.replace` would rename onto a path ending in
`<suffix>`, i.e. after the temp file is written and fsynced) or `enospc-replace:<suffix>` (that
rename fails with ENOSPC, as on a full disk). The point is reached by the real code path; nothing
the tool owns is faked.
"""

from __future__ import annotations

import errno
import importlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any


def _kill(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def _stopping(real: Any) -> Any:
    stopped = []

    def stop(*args: Any, **kwargs: Any) -> Any:
        if not stopped:
            stopped.append(True)
            os.kill(os.getpid(), signal.SIGSTOP)
        return real(*args, **kwargs)

    return stop


def _signalling(real: Any, nth: int, signum: int) -> Any:
    calls = itertools.count(1)
    lock = threading.Lock()

    def term(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            call = next(calls)
        if call == nth:
            signal.pthread_kill(threading.main_thread().ident or 0, signum)
            deadline = time.monotonic() + 120  # a bound for a broken handler, not a verdict
            while not self.stop.is_set():
                if time.monotonic() > deadline:
                    os._exit(99)
                time.sleep(0.01)
        return real(self, *args, **kwargs)

    return term


def _holding(real: Any, nth: int) -> Any:
    calls = itertools.count(1)
    lock = threading.Lock()

    def hold(*args: Any, **kwargs: Any) -> Any:
        with lock:
            call = next(calls)
        if call == nth:
            held, release = os.environ.get("CRASHPOINT_HELD"), os.environ.get("CRASHPOINT_RELEASE")
            if held:
                open(held, "w").close()  # the test can see that the call was reached
            while release is None or not os.path.exists(release):  # until the test releases it (or kills the process)
                time.sleep(0.01)
        return real(*args, **kwargs)

    return hold


def _install(spec: str) -> None:
    how, _, where = spec.partition(":")
    if how in ("kill", "stop", "term", "int", "hold"):
        module_name, _, attr = where.partition(":")
        attr, _, nth = attr.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        real = getattr(owner, name)
        if how == "hold":
            setattr(owner, name, _holding(real, int(nth or 1)))
        elif how in ("term", "int"):
            setattr(owner, name, _signalling(real, int(nth or 1), signal.SIGTERM if how == "term" else signal.SIGINT))
        else:
            setattr(owner, name, _kill if how == "kill" else _stopping(real))
        return
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(dst).endswith(where):
            if how == "kill-replace":
                _kill()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real_replace(src, dst, *args, **kwargs)

    if how not in ("kill-replace", "enospc-replace"):
        raise SystemExit(f"unknown crash point {spec!r}")
    os.replace = replace  # type: ignore[assignment]


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def spawn(spec: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`agora-reconciler ARGS...` as a real process that acts at the point SPEC names (see above)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.crashpoint", spec, "--", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def main() -> None:
    spec, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: crashpoint SPEC -- ARGS..."
    _install(spec)
    from reconciler.cli import main as cli_main

    sys.argv = ["agora-reconciler", *args]
    cli_main()


if __name__ == "__main__":
    main()
