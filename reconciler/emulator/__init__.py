"""The local Agora Conversational AI API: a faithful emulator for tests, demos and `endpoint: local`.

`Store` holds the state and rules, `EmulatorApp` is the HTTP application (auth, routing, faults,
request log, admin API under `/_emulator/`), `EmulatorAdapter` serves it in-process to `requests`,
`EmulatorServer` serves it over real HTTP. Nothing here imports the rest of `reconciler/`.
"""

from __future__ import annotations

from .adapter import EmulatorAdapter
from .app import EmulatorApp, Request, Response
from .server import EmulatorServer
from .store import DEMO_PIPELINES, Store

__all__ = ["DEMO_PIPELINES", "EmulatorAdapter", "EmulatorApp", "EmulatorServer", "Request", "Response", "Store"]
