"""The emulator's real HTTP server: a `ThreadingHTTPServer` in front of one `EmulatorApp`.

Speaks HTTP/1.1 with keep-alive, answers every method the API uses, and closes the connection
without an answer for `drop` faults. `EmulatorServer` runs it on a background thread so the
CLI (`emulator serve`) and tests can start and stop it cleanly.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .app import EmulatorApp, Request


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: Nagle + delayed ACK = 40 ms a call
    server_version = "agora-emulator"
    app: EmulatorApp
    quiet: bool = False

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        result = self.app.handle(Request(self.command, self.path, dict(self.headers.items()), body))
        if result.drop:
            self.close_connection = True
            return
        self.send_response(result.status)
        for key, value in result.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        if result.body:
            self.wfile.write(result.body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            sys.stderr.write(f"emulator: {self.address_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class EmulatorServer:
    """Owns the listening socket and the serving thread."""

    def __init__(self, app: EmulatorApp, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = False) -> None:
        handler = type("Handler", (_Handler,), {"app": app, "quiet": quiet})
        self.app = app
        self.httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self.app.store.persist()
