"""`python -m reconciler.cli` runs the command line (as `python -m reconciler` does)."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    main()
