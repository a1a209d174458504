"""How the transport turns an answer into a `Response` (issue 15: CPU per API write): as requests'
`HTTPAdapter.build_response` does (status, reason, headers with a repeated field joined, encoding,
URL, body), except that `Set-Cookie` fills no jar, and no cookie is ever sent back; and the
headers a call copies are the session's, each copy its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from reconciler.client import Client, Credentials
from reconciler.client.adapter import PooledAdapter

from .loopback import loopback_http

ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nSet-Cookie: session=s3cr3t-cookie; Path=/\r\n"
    b"X-Trace: one\r\nX-Trace: two\r\nRetry-After: 7\r\nContent-Length: 36\r\n\r\n"
    b'{"reason":"invalid","detail":"busy"}'
)


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP/1.1 server that records each request's head and answers ANSWER."""
    with loopback_http(ANSWER) as (port, heads):
        yield f"http://127.0.0.1:{port}", heads


def test_an_answer_is_the_response_requests_builds_without_its_cookies(server: tuple[str, list[bytes]]) -> None:
    url, _heads = server
    session = requests.Session()
    adapter = PooledAdapter()
    session.mount("http://", adapter)
    built: list[tuple[requests.Response, requests.Response, set[str]]] = []
    real = adapter.build_response

    def both(req: requests.PreparedRequest, resp: Any) -> requests.Response:
        ours = real(req, resp)
        built.append((ours, HTTPAdapter.build_response(adapter, req, resp), set(vars(ours))))
        return ours

    adapter.build_response = both  # type: ignore[method-assign]
    response = session.get(f"{url}/v2/x", timeout=10)
    ours, theirs, attributes = built[0]
    assert response is ours
    for name in ("status_code", "reason", "encoding", "url", "request", "connection", "raw"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.headers == theirs.headers and list(ours.headers.items()) == list(theirs.headers.items())
    assert ours.headers["x-trace"] == "one, two" and ours.headers["Retry-After"] == "7"
    assert dict(theirs.cookies) == {"session": "s3cr3t-cookie"} and dict(ours.cookies) == {}, "no jar filled"
    assert attributes == set(vars(theirs)), "every attribute requests' own gives it"
    assert response.json() == {"reason": "invalid", "detail": "busy"}


def test_a_cookie_the_api_sets_is_never_sent_back(server: tuple[str, list[bytes]]) -> None:
    url, heads = server
    client = Client(url, Credentials.basic("a", "b", secret=False))
    for _ in range(2):
        with pytest.raises(Exception, match="HTTP 400 invalid: busy"):
            client.update_number("+14155550100", {"inbound_config": {"pipeline_id": "p"}})
    assert len(heads) == 2 and all(b"cookie" not in head.lower() for head in heads), heads
    assert not client.session.cookies


def test_each_call_copies_the_session_headers() -> None:
    client = Client("http://127.0.0.1:9/api", Credentials.basic("a", "b", secret=False))
    first = client._prepare("PATCH", "v2/phone-numbers/+1", None, {"x": 1}).headers
    second = client._prepare("GET", "v2/phone-numbers", None, None).headers
    assert isinstance(first, CaseInsensitiveDict) and first["content-length"] == "8" and "Content-Length" not in second
    assert dict(second) == dict(client.session.headers)
    copied = first.copy()
    copied["X-Other"] = "1"
    del copied["authorization"]
    assert "X-Other" not in first and "Authorization" in first, "a copy is its own"
    assert copied == CaseInsensitiveDict({k: v for k, v in first.items() if k != "Authorization"} | {"X-Other": "1"})
