"""How the transport builds and sends a call (issue 15: CPU per API write): the request is the one
`PreparedRequest.prepare` would build, handed to the adapter directly; the adapter looks its
connection pool and CA bundle up once per origin; proxies and CA bundles are still honoured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from reconciler.client import Client, Credentials, resolve_endpoint
from reconciler.client.adapter import PooledAdapter

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator
from .loopback import loopback_http

NUMBER_BODY = {"provider": "byo", "phone_number": "+14155550100", "label": "x ü", "inbound_config": {}, "outbound_config": {}}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "v2/phone-numbers", None),
        ("GET", "v2/phone-numbers/+14155550100", None),
        ("POST", "v2/phone-numbers", NUMBER_BODY),
        ("PATCH", "v2/phone-numbers/+14155550100", {"inbound_config": {"pipeline_id": "pl_1"}}),
        ("DELETE", "v2/phone-numbers/+14155550100", None),
        ("POST", "v2/projects/app%20one/agents/A%2FB/leave", None),
        ("POST", "v2/projects/app/join", {"name": "n", "properties": {"channel": "c", "remote_rtc_uids": ["*"]}}),
    ],
)
@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:8080/api/conversational-ai-agent", "https://Bücher.Example/gw/api/conversational-ai-agent"]
)
def test_a_call_is_the_request_requests_would_prepare(base: str, method: str, path: str, body: Any) -> None:
    client = Client(base, Credentials.basic("a", "b", secret=False))
    built = client._prepare(method, path, None, body)
    expected = requests.PreparedRequest()
    expected.prepare(method=method, url=f"{client.base_url}/{path}", headers=client.session.headers, json=body)
    assert (built.method, built.url, built.body) == (expected.method, expected.url, expected.body)
    assert dict(built.headers) == dict(expected.headers)


def test_the_pool_and_the_ca_bundle_are_looked_up_once(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []
    checks: list[str] = []
    real_lookup, real_check = HTTPAdapter.get_connection_with_tls_context, HTTPAdapter.cert_verify

    def lookup(self: HTTPAdapter, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        lookups.append(request.url or "")
        return real_lookup(self, request, *args, **kwargs)

    def check(self: HTTPAdapter, conn: Any, url: str, *args: Any) -> None:
        checks.append(url)
        real_check(self, conn, url, *args)

    monkeypatch.setattr(HTTPAdapter, "get_connection_with_tls_context", lookup)
    monkeypatch.setattr(HTTPAdapter, "cert_verify", check)
    client = Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET))
    client.add_number(dict(NUMBER_BODY))
    for _ in range(3):
        client.update_number("+14155550100", {"inbound_config": {"pipeline_id": "pl_demo_sales"}})
    assert client.get_number("+14155550100")["label"] == "x ü"
    assert len(lookups) == 1 and len(checks) == 1, "one origin, one set of TLS settings: worked out once"
    assert [r["status"] for r in emu.requests()] == [201, 200, 200, 200, 200]


@pytest.fixture
def proxy() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback HTTP proxy that records each request's head and answers an empty list."""
    with loopback_http(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]") as served:
        yield served


def test_a_proxy_from_the_environment_is_used_for_every_call(proxy: tuple[int, list[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    port, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = Client("http://api.example.invalid/api/conversational-ai-agent", Credentials.basic("a", "b", secret=False))
    monkeypatch.delenv("HTTP_PROXY")  # read once, when the client was built
    assert client.list_numbers() == [] and client.list_numbers() == []
    assert [head.split(b"\r\n")[0] for head in seen] == [
        b"GET http://api.example.invalid/api/conversational-ai-agent/v2/phone-numbers HTTP/1.1"
    ] * 2


def test_the_adapter_serves_other_origins_and_settings_too(emu: Emulator) -> None:
    """A pool is kept per (origin, verify, cert): another origin or setting is looked up again."""
    adapter = PooledAdapter()
    session = requests.Session()
    session.mount("http://", adapter)
    api = resolve_endpoint(emu.url)
    auth = Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET).header
    other = api.replace("127.0.0.1", "localhost")
    for url, verify in ((api, True), (other, True), (api, False), (api, True)):
        response = session.get(f"{url}/v2/phone-numbers", headers={"Authorization": auth}, verify=verify, timeout=10)
        assert response.status_code == 200 and response.json() == []
    assert len(adapter.poolmanager.pools) == 3, "verify=False is a pool of its own, as with HTTPAdapter"
    assert len(emu.requests()) == 4
