"""`python -m reconciler` runs the command line."""

from __future__ import annotations

from .memory import pause_for_startup

pause_for_startup()  # until the command's module is imported: see reconciler/memory.py

from .cli import main  # noqa: E402 - imported with the collector paused

if __name__ == "__main__":
    main()
