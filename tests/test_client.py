"""The API client against the emulator over loopback: retries, typed errors, pages, endpoints."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from reconciler.client import Client, Credentials, RetryPolicy, resolve_endpoint
from reconciler.errors import (
    AuthError,
    ConflictError,
    CredentialsError,
    LiveReadError,
    NotFoundError,
    RetryBudgetExhausted,
    ServerError,
    TransportError,
)

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator, agent_props


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(emu: Emulator, sleeps: list[float]) -> Client:
    return Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET), sleep=sleeps.append)


def test_endpoint_resolution() -> None:
    assert resolve_endpoint(None) == "https://api.agora.io/api/conversational-ai-agent"
    assert resolve_endpoint("us") == "https://api-us-west-1.agora.io/api/conversational-ai-agent"
    assert resolve_endpoint("CN") == "https://api-cn-east-1.sd-rtn.com/cn/api/conversational-ai-agent"
    assert resolve_endpoint("http://127.0.0.1:8080") == "http://127.0.0.1:8080/api/conversational-ai-agent"
    assert resolve_endpoint("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/api/conversational-ai-agent"
    assert resolve_endpoint("https://x/gateway/api/conversational-ai-agent/") == "https://x/gateway/api/conversational-ai-agent"
    with pytest.raises(CredentialsError, match="not one of local"):
        resolve_endpoint("ftp://x")


def test_credentials_from_environment() -> None:
    assert Credentials.from_env({"AGORA_CUSTOMER_ID": "a", "AGORA_CUSTOMER_SECRET": "b"}).header == "Basic YTpi"
    assert Credentials.from_env({"AGORA_AUTH_TOKEN": "007x"}).header == "agora token=007x"
    with pytest.raises(CredentialsError, match="AGORA_CUSTOMER_ID \\+ AGORA_CUSTOMER_SECRET, or AGORA_AUTH_TOKEN"):
        Credentials.from_env({})
    with pytest.raises(CredentialsError, match="AGORA_CUSTOMER_SECRET is not set"):
        Credentials.from_env({"AGORA_CUSTOMER_ID": "a"})
    assert "zq-secret" not in repr(Credentials.from_env({"AGORA_CUSTOMER_ID": "a", "AGORA_CUSTOMER_SECRET": "zq-secret"}))


def test_two_503s_then_success_takes_three_requests(client: Client, emu: Emulator, sleeps: list[float]) -> None:
    emu.fault(method="GET", path="phone-numbers$", status=503, count=2)
    assert client.list_numbers() == []
    assert [r["status"] for r in emu.requests()] == [503, 503, 200]
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0, "exponential backoff with jitter"


def test_retry_after_is_honoured(client: Client, emu: Emulator, sleeps: list[float]) -> None:
    emu.fault(method="GET", path="phone-numbers$", status=429, count=1, retry_after=3)
    client.list_numbers()
    assert sleeps == [3.0]


def test_retry_after_really_waits(emu: Emulator) -> None:
    real = Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET))
    emu.fault(method="PATCH", path="phone-numbers", status=429, count=1, retry_after=1)
    real.add_number({"provider": "byo", "phone_number": "+14155550100", "label": "x", "inbound_config": {}, "outbound_config": {}})
    started = time.monotonic()
    real.update_number("+14155550100", {"inbound_config": {"pipeline_id": "pl_demo_sales"}})
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in emu.requests() if r["method"] == "PATCH"] == [429, 200]


def test_post_join_is_sent_once_on_503(client: Client, emu: Emulator, sleeps: list[float]) -> None:
    emu.fault(method="POST", path="/join$", status=503, count=3)
    with pytest.raises(ServerError, match="HTTP 503"):
        client.join("app", {"name": "x", "preset": "p", "properties": agent_props("c")})
    assert [r["method"] for r in emu.requests()] == ["POST"] and sleeps == []


def test_exhausted_budget_is_a_clear_error(emu: Emulator, sleeps: list[float]) -> None:
    client = Client(
        resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET), retry=RetryPolicy(max_attempts=3), sleep=sleeps.append
    )
    emu.fault(method="GET", status=503, count=10)
    with pytest.raises(RetryBudgetExhausted, match=r"gave up after 3 attempts .*HTTP 503"):
        client.list_numbers()
    assert len(emu.requests()) == 3


def test_time_budget_stops_retrying(emu: Emulator, sleeps: list[float]) -> None:
    client = Client(
        resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET), retry=RetryPolicy(budget_s=5), sleep=sleeps.append
    )
    emu.fault(method="GET", status=429, count=10, retry_after=4)
    with pytest.raises(RetryBudgetExhausted):
        client.list_numbers()
    assert sum(sleeps) <= 5 and len(emu.requests()) == 2


def test_connection_errors_are_retried_for_gets(client: Client, emu: Emulator) -> None:
    emu.fault(method="GET", path="phone-numbers$", drop=True, count=1)
    assert client.list_numbers() == []
    assert len(emu.requests()) == 2


def test_wrong_credentials_name_the_variables_without_the_secret(emu: Emulator) -> None:
    secret = "Wr0ng-Secret-Value-123456"
    client = Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, secret))
    with pytest.raises(AuthError) as info:
        client.list_numbers()
    message = str(info.value)
    assert "AGORA_CUSTOMER_ID" in message and "AGORA_AUTH_TOKEN" in message and "HTTP 401" in message
    assert secret not in message


def test_typed_errors_carry_the_api_reason(client: Client) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.get_agent("app", "NOPE")
    assert missing.value.api_reason == "TaskNotFound" and missing.value.status == 404
    body = {"provider": "byo", "phone_number": "+14155550100", "label": "x", "inbound_config": {}, "outbound_config": {}}
    client.add_number(body)
    with pytest.raises(ConflictError) as conflict:
        client.add_number(body)
    assert conflict.value.api_reason == "phone_number_exists"


def test_unreachable_endpoint_is_a_transport_error(sleeps: list[float]) -> None:
    client = Client(
        "http://127.0.0.1:9/api/conversational-ai-agent",
        Credentials.basic("a", "b"),
        retry=RetryPolicy(max_attempts=2),
        sleep=sleeps.append,
    )
    with pytest.raises(RetryBudgetExhausted) as info:
        client.list_numbers()
    assert isinstance(info.value.last, TransportError)


def test_iter_agents_sends_explicit_filters_and_walks_pages(client: Client, emu: Emulator) -> None:
    emu.seed(agents=[{"app_id": "app", "name": f"n{i}", "preset": "p", "properties": agent_props(f"c{i}")} for i in range(45)])
    ids = [a["agent_id"] for a in client.iter_agents("app", from_time=0, limit=20)]
    assert len(ids) == 45 == len(set(ids))
    queries = [r["query"] for r in emu.requests()]
    assert len(queries) == 3
    assert all("from_time=0" in q and "state=1%2C2%2C5" in q and "limit=20" in q for q in queries)


class _StuckCursor(BaseAdapter):
    """A fake server whose cursor never advances (what a buggy API would do)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response._content = (
            b'{"data": {"count": 1, "list": [{"agent_id": "A", "start_ts": 1, "status": "RUNNING"}]}, "meta": {"cursor": "A", "total": 5}}'
        )
        return response

    def close(self) -> None:
        pass


def test_a_cursor_that_does_not_advance_fails_loudly() -> None:
    client = Client("http://stuck/api/conversational-ai-agent", Credentials.basic("a", "b"), adapter=_StuckCursor())
    with pytest.raises(LiveReadError, match="did not advance"):
        list(client.iter_agents("app", from_time=0))


def test_request_counting(client: Client) -> None:
    client.list_numbers()
    list(client.iter_agents("app", from_time=0))
    assert client.request_count == 2 and client.mutating_count == 0
    assert client.requests_made["GET agents.list"] == 1
