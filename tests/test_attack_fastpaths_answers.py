"""Attack on the answers built without a cookie jar (`PooledAdapter.build_response`) and the headers
copied in one step: raw HTTP/1.1 answers with Set-Cookie (several, and one holding a secret), gzip,
chunked, gzip inside chunks, empty bodies, 204, a charset, header names repeated in other cases,
an error that names a request id: the client's result (or its error message) is the same as with
requests' own `HTTPAdapter.build_response`, and no cookie is ever sent back. An empty body or a
JSON array or string where an object is due is a clear `ServerError`, not a TypeError."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from requests.adapters import HTTPAdapter

from reconciler.client import Client, Credentials
from reconciler.client.adapter import PooledAdapter
from reconciler.client.transport import RetryPolicy
from reconciler.errors import ReconcilerError

from .loopback import read_request

BODY = b'{"phone_number": "+14155550100", "label": "S\xc3\xa4les \\u2603", "n": -12345678901234567890}'
ZIPPED = gzip.compress(BODY, mtime=0)


def _chunked(data: bytes, size: int = 7) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def _answer(status: str, headers: list[str], body: bytes, *, chunked: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        body = _chunked(body)
    else:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


COOKIES = ["Set-Cookie: session=s3cr3t-cookie-value-1; Path=/; HttpOnly", "set-cookie: other=sk-live-cookie-4f8a2b9c; Secure"]
ANSWERS = {
    "plain": _answer("200 OK", ["Content-Type: application/json", *COOKIES], BODY),
    "gzip": _answer("200 OK", ["Content-Type: application/json", "Content-Encoding: gzip", *COOKIES], ZIPPED),
    "chunked": _answer("200 OK", ["Content-Type: application/json; charset=utf-8", *COOKIES], BODY, chunked=True),
    "gzip-chunked": _answer("200 OK", ["Content-Type: application/json", "Content-Encoding: gzip"], ZIPPED, chunked=True),
    "empty": _answer("200 OK", ["Content-Type: application/json", *COOKIES], b""),
    "empty-chunked": _answer("200 OK", ["Content-Type: application/json"], b"", chunked=True),
    "no-content": b"HTTP/1.1 204 No Content\r\nSet-Cookie: a=b\r\n\r\n",
    "latin1": _answer("200 OK", ["Content-Type: application/json; charset=ISO-8859-1", "X-A: 1", "x-a: 2", "X-a: 3"], BODY),
    "odd-reason": _answer("200 Fine \xe9", ["Content-Type: application/json", "X-Empty:", "X-Spaces:   padded   "], BODY),
    "error": _answer(
        "409 Conflict", ["Content-Type: application/json", "X-Request-Id: r-1", *COOKIES], b'{"reason":"exists","detail":"already"}'
    ),
    "error-gzip": _answer("503 Busy", ["Content-Encoding: gzip", "Retry-After: 0"], gzip.compress(b'{"reason":"busy"}', mtime=0)),
    "not-json": _answer("200 OK", ["Content-Type: text/html"], b"<html>hi</html>"),
    "array": _answer("200 OK", ["Content-Type: application/json"], b'[["label", "x"]]'),
    "string": _answer("200 OK", ["Content-Type: application/json"], b'"ok"'),
}


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    """A loopback server that answers each request with the next queued raw answer, then closes."""
    heads: list[bytes] = []
    queue: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(10)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = read_request(conn)
                heads.append(b"" if request is None else request[0])
                answer = queue.pop(0) if queue else b"HTTP/1.1 500 Empty queue\r\nContent-Length: 0\r\n\r\n"
                conn.sendall(answer.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", heads, queue
    stop.set()
    with contextlib.suppress(OSError), socket.create_connection(listener.getsockname(), timeout=1):
        pass  # wakes the accept
    listener.close()
    thread.join(timeout=10)


def _outcome(client: Client, call: str) -> tuple[str, Any]:
    try:
        if call == "get":
            return "ok", client.get_number("+14155550100")
        return "ok", client.update_number("+14155550100", {"label": "x"})
    except ReconcilerError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("call", ["get", "patch"])
@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_an_odd_answer_reads_as_with_requests_own_response(name: str, call: str, server: tuple[str, list[bytes], list[bytes]]) -> None:
    url, heads, queue = server
    outcomes = []
    for stock in (False, True):
        client = Client(
            url,
            Credentials.basic("cust", "s3cr3t-Customer-Secret-9f8e7d", secret=False),
            retry=RetryPolicy(max_attempts=1),
            sleep=lambda _s: None,
        )
        adapter = client.session.get_adapter(url + "/")
        assert isinstance(adapter, PooledAdapter)
        if stock:  # the general path: requests' own answer, cookie jar and all
            adapter.build_response = lambda req, resp, a=adapter: HTTPAdapter.build_response(a, req, resp)  # type: ignore[method-assign]
        queue.append(ANSWERS[name])
        queue.append(ANSWERS[name])
        outcomes.append((_outcome(client, call), _outcome(client, call)))
        queue.clear()
        client.close()
    assert outcomes[0] == outcomes[1], name
    assert all(b"cookie" not in head.lower() for head in heads), "no cookie sent back"
    if name in ("plain", "gzip", "chunked", "gzip-chunked", "latin1", "odd-reason") and call == "get":
        assert outcomes[0][0] == ("ok", {"phone_number": "+14155550100", "label": "S\u00e4les \u2603", "n": -12345678901234567890})
    if name in ("empty", "empty-chunked", "no-content"):
        expected = ("ServerError", "the phone number answered an empty body, not a JSON object") if call == "get" else ("ok", {})
        assert outcomes[0][0] == expected
    if name in ("array", "string"):
        assert outcomes[0][0][0] == "ServerError" and "not a JSON object" in outcomes[0][0][1]
