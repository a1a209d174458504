"""The local Agora Conversational AI API: a faithful emulator for tests, demos and `endpoint: local`.

`Store` holds the state and rules, `EmulatorApp` is the HTTP application (auth, routing, faults,
request log, admin API under `/_emulator/`), `EmulatorAdapter` serves it in-process to `requests`,
`EmulatorServer` serves it over real HTTP. Nothing here imports the rest of `reconciler/`.

Modules: `records.py` (vocabulary), `state.py` (state, clock, sessions), `persistence.py` (the
data file and its lock), `store.py` + `agents.py` + `telephony.py` (the API's rules), `tokens.py`
(AccessToken2 verification), `faults.py` (admin fault rules), `variants.py` (alternative
readings of the API, listed there).
"""

from __future__ import annotations

from .adapter import EmulatorAdapter
from .app import EmulatorApp, Request, Response
from .persistence import DataFileError
from .server import EmulatorServer
from .store import DEMO_PIPELINES, ApiFault, Store
from .variants import VARIANTS

__all__ = [
    "DEMO_PIPELINES",
    "VARIANTS",
    "ApiFault",
    "DataFileError",
    "EmulatorAdapter",
    "EmulatorApp",
    "EmulatorServer",
    "Request",
    "Response",
    "Store",
]
