"""A one-connection loopback HTTP/1.1 server for client tests: it records the head of every request
(reading a body by its Content-Length) and answers each with the same bytes, keeping the
connection open as an API or a proxy does."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


def read_request(conn: socket.socket, data: bytes = b"") -> tuple[bytes, bytes] | None:
    """The head of the next request on `conn` (`data`: bytes already read from it), its body read by
    its Content-Length and skipped, and the bytes after it; None when the client closed first."""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    head, _, data = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(data) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return head, data[length:]


@contextlib.contextmanager
def loopback_http(answer: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """Serve one connection on a free port; yields (port, heads so far)."""
    heads: list[bytes] = []
    accepted: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        accepted.append(conn)
        with conn:
            data = b""
            while (request := read_request(conn, data)) is not None:
                head, data = request
                heads.append(head)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], heads
    finally:
        for conn in accepted:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the server thread out of its recv
        listener.close()
        thread.join(timeout=10)
