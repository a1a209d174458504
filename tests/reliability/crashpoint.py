"""Run the CLI as a real process that is SIGKILLed (or fails) at one exact point: deterministic crashes.

`python -m tests.reliability.crashpoint SPEC -- ARGS...` patches one function, then runs
`agora-reconciler ARGS...`. SPEC is `kill:<module>:<attr>` (SIGKILL when it is called),
`kill-replace:<suffix>` (SIGKILL when `os.replace` would rename onto a path ending in
`<suffix>`, i.e. after the temp file is written and fsynced) or `enospc-replace:<suffix>` (that
rename fails with ENOSPC, as on a full disk). The point is reached by the real code path; nothing
the tool owns is faked.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
from typing import Any


def _kill(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(spec: str) -> None:
    how, _, where = spec.partition(":")
    if how == "kill":
        module_name, _, attr = where.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _kill)
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


def main() -> None:
    spec, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: crashpoint SPEC -- ARGS..."
    _install(spec)
    from reconciler.cli import main as cli_main

    sys.argv = ["agora-reconciler", *args]
    cli_main()


if __name__ == "__main__":
    main()
