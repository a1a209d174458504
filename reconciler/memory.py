"""The cyclic garbage collector around the allocation-heavy phases of a run.

Loading a declaration, reading the live account and diffing build hundreds of thousands of small
dicts, lists and tuples with no reference cycles; each allocation burst triggers the collector,
which rescans everything built so far (about a fifth of a 10,000-number plan's CPU). `acyclic()`
pauses it for such a phase and then freezes what was built (`gc.freeze`), so later collections
never rescan it; reference counting still frees it all. Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def acyclic() -> Iterator[None]:
    """Run the block with the cyclic collector paused; freeze what survives it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
