"""The emulator's real HTTP server: a `ThreadingHTTPServer` in front of one `EmulatorApp`.

Speaks HTTP/1.1 with keep-alive, answers every method the API uses, and closes the connection
without an answer for `drop` faults. A request it cannot read (a bad `Content-Length`, broken
chunked encoding, a malformed request line, an unknown method) gets a JSON error too, never a
dropped connection or a traceback. `EmulatorServer` runs it on a background thread so the
CLI (`emulator serve`) and tests can start and stop it cleanly.
"""

from __future__ import annotations

import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .app import EmulatorApp, Request

MAX_BODY = 16 * 1024 * 1024


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: Nagle + delayed ACK = 40 ms a call
    server_version = "agora-emulator"
    app: EmulatorApp
    quiet: bool = False
    server: _Server

    def _serve(self) -> None:
        try:
            body = self._body()
        except _BadRequest as exc:
            self.close_connection = True  # the rest of the stream cannot be trusted
            self.send_error(exc.status, str(exc))
            return
        result = self.app.handle(
            Request(self.command, self.path, dict(self.headers.items()), body, self.server.connection_ids.get(self.request))
        )
        if result.drop:
            self.close_connection = True
            return
        try:
            self.send_response(result.status)
            for key, value in result.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(result.body)))
            self.end_headers()
            if result.body:
                self.wfile.write(result.body)
        except (ConnectionError, TimeoutError) as exc:
            self.close_connection = True
            if not self.quiet:
                sys.stderr.write(f"emulator: {self.address_string()} went away before the answer ({type(exc).__name__})\n")
            self.app.client_gone(result)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._chunked()
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isdigit():
            raise _BadRequest(400, f"invalid Content-Length {raw[:40]!r}")
        length = int(raw)
        if length > MAX_BODY:
            raise _BadRequest(413, f"the body is larger than {MAX_BODY} bytes")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise _BadRequest(400, "the body is shorter than its Content-Length")
        return body

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise _BadRequest(400, "broken chunked encoding") from None
            total += size
            if size < 0 or total > MAX_BODY:
                raise _BadRequest(413, f"the body is larger than {MAX_BODY} bytes")
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the HTTP layer itself are JSON too (the agent error shape)."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self.log_error("code %d, message %s", code, message)
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in HTTP/1.1 all the same
            self.request_version = self.protocol_version
        body = json.dumps({"detail": message or phrase, "reason": "InvalidRequestBody" if code < 500 else "InternalError"}).encode()
        self.send_response(code, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.close_connection = True
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            sys.stderr.write(f"emulator: {self.address_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    quiet = False
    app: EmulatorApp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_ids: dict[Any, int] = {}  # accepted socket -> its id in `app` (until it is closed)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Register the connection as soon as it is accepted (before its thread starts), so that
        `GET /_emulator/connections` on a newer connection sees every older one (accept is FIFO)."""
        self.connection_ids[request] = self.app.connection_opened()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.app.connection_closed(self.connection_ids.pop(request))
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.app.connection_closed(self.connection_ids.pop(request))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away mid-answer is not an emulator error: one line, or nothing with -q."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            if not self.quiet:
                sys.stderr.write(f"emulator: client {client_address[0]} went away ({type(exc).__name__})\n")
            return
        sys.stderr.write(f"emulator: error serving {client_address[0]}: {type(exc).__name__}: {exc}\n")


class EmulatorServer:
    """Owns the listening socket and the serving thread."""

    def __init__(self, app: EmulatorApp, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = False) -> None:
        handler = type("Handler", (_Handler,), {"app": app, "quiet": quiet})
        self.app = app
        self.httpd = _Server((host, port), handler)
        self.httpd.quiet = quiet
        self.httpd.app = app
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
        self.app.store.close()
