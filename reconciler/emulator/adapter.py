"""A `requests` transport adapter that hands requests to an in-process `EmulatorApp`.

Used by `endpoint: local` and by fast unit tests: the full HTTP semantics of the emulator
(routing, auth, faults, the request log) without a socket. A `drop` fault becomes a
`requests.ConnectionError`, as a reset connection would.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from .app import EmulatorApp, Request


class EmulatorAdapter(BaseAdapter):
    def __init__(self, app: EmulatorApp) -> None:
        super().__init__()
        self.app = app

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        target = request.path_url
        result = self.app.handle(Request(request.method or "GET", target, dict(request.headers), bytes(body)))
        if result.drop:
            raise requests.ConnectionError("Connection aborted: the emulator dropped the response", request=request)
        response = requests.Response()
        response.status_code = result.status
        response.headers = CaseInsensitiveDict({"Content-Length": str(len(result.body)), **result.headers})
        response._content = result.body
        response.url = request.url or ""
        response.request = request
        response.reason = "OK" if result.status < 400 else "Error"
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass
