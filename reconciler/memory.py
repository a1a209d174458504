"""The cyclic garbage collector around the allocation-heavy phases of a run.

Loading a declaration, reading the live account and diffing build hundreds of thousands of small
dicts, lists and tuples with no reference cycles; each allocation burst triggers the collector,
which rescans everything built so far (about a fifth of a 10,000-number plan's CPU). `acyclic()`
pauses it for such a phase and then freezes what was built (`gc.freeze`), so later collections
never rescan it; reference counting still frees it all. Start-up is such a phase too: importing
the command line and the modules a command needs builds tens of thousands of long-lived objects
(modules, classes, functions) and no garbage, so the collector is paused from the first line of a
run (`pause_for_startup`) until the command's module is imported (`startup_done`, which freezes
them). Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_resume_after_startup = False


def pause_for_startup() -> None:
    """Pause the collector while the run imports what it needs (see the module docstring)."""
    global _resume_after_startup
    if gc.isenabled():
        gc.disable()
        _resume_after_startup = True


def startup_done() -> None:
    """Freeze what start-up built and resume the collector `pause_for_startup` paused (else nothing)."""
    global _resume_after_startup
    if _resume_after_startup:
        _resume_after_startup = False
        gc.freeze()
        gc.enable()


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
