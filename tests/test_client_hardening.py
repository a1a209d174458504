"""The client under hostile conditions (issue 10, items 3 and 19): credentials with whitespace or
characters a header cannot carry, a server that accepts and never answers, a TLS failure."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator

import pytest

from reconciler.client import Client, Credentials, RetryPolicy, parse_timeout
from reconciler.errors import CredentialsError, FatalTransportError, RetryBudgetExhausted, TransportError, clip

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback server that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def test_credentials_from_the_environment_are_stripped() -> None:
    expected = "Basic " + base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode()
    env = {"AGORA_CUSTOMER_ID": f"  {CUSTOMER_ID}\n", "AGORA_CUSTOMER_SECRET": f"{CUSTOMER_SECRET}\n"}
    assert Credentials.from_env(env).header == expected
    assert Credentials.from_env({"AGORA_AUTH_TOKEN": "\t007eJxToken-from-a-file\r\n"}).header == "agora token=007eJxToken-from-a-file"
    assert Credentials.from_env({"AGORA_CUSTOMER_ID": " ", "AGORA_CUSTOMER_SECRET": "", "AGORA_AUTH_TOKEN": "007x"}).kind == "token"


def test_stripped_credentials_authenticate(emu: Emulator) -> None:
    env = {"AGORA_CUSTOMER_ID": f"{CUSTOMER_ID}\n", "AGORA_CUSTOMER_SECRET": f"{CUSTOMER_SECRET}\n"}
    client = Client(f"{emu.url}/api/conversational-ai-agent", Credentials.from_env(env))
    assert client.list_numbers() == []


@pytest.mark.parametrize("token", ["007 token-with-a-space", "007token\x00nul", "007tökén-non-ascii", "007a\nb"])
def test_a_token_a_header_cannot_carry_is_an_error_at_once(token: str) -> None:
    with pytest.raises(CredentialsError, match="AGORA_AUTH_TOKEN cannot be sent in an HTTP header") as info:
        Credentials.from_env({"AGORA_AUTH_TOKEN": token})
    assert token.strip() not in str(info.value)


def test_an_invalid_header_is_never_retried(emu: Emulator) -> None:
    """Even a header value built past `Credentials`' checks fails on the first attempt, not the fifth."""
    sleeps: list[float] = []
    client = Client(f"{emu.url}/api/conversational-ai-agent", Credentials("agora token=bad\nvalue", "token"), sleep=sleeps.append)
    with pytest.raises(FatalTransportError, match="cannot be sent"):
        client.list_numbers()
    assert sleeps == [] and emu.requests() == [] and client.request_count == 1


def test_a_silent_server_fails_within_the_budget_naming_the_endpoint(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    client = Client(f"{url}/api/conversational-ai-agent", Credentials.basic("a", "b"), timeout=(0.2, 0.2))
    assert client.budget_s == pytest.approx(0.6)
    with pytest.raises(RetryBudgetExhausted) as info:
        client.list_numbers()
    message = str(info.value)
    assert f"GET {url}/api/conversational-ai-agent/v2/phone-numbers: no answer from {url} " in message
    assert "gave up after" in message
    assert 1 <= client.request_count <= 3, "the budget (3 x read timeout) ends the retries, not the attempt count"


def test_a_bounded_block_shares_one_deadline(silent_port: int) -> None:
    """A whole live read is bounded, not each of its calls: a second call starts with the time left."""
    now = [0.0]
    client = Client(
        f"http://127.0.0.1:{silent_port}/api/conversational-ai-agent",
        Credentials.basic("a", "b"),
        timeout=(0.2, 0.2),
        retry=RetryPolicy(max_attempts=1),
        clock=lambda: now[0],
    )
    with client.bounded():
        with pytest.raises(RetryBudgetExhausted):
            client.list_numbers()
        now[0] = 0.7  # the block's 0.6 s are spent
        with pytest.raises(TransportError, match=r"no time left in the 0\.6 s budget"):
            client.list_numbers()
    assert client.request_count == 1


def test_a_tls_failure_is_not_retried() -> None:
    """An https endpoint that speaks plain HTTP: the TLS handshake fails once and is not retried."""
    accepted: list[int] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(5)

        def serve() -> None:
            try:
                while len(accepted) < 5:
                    conn, _ = server.accept()
                    accepted.append(1)
                    with conn:
                        conn.recv(1024)
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                return

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        sleeps: list[float] = []
        client = Client(
            f"https://127.0.0.1:{server.getsockname()[1]}/api/conversational-ai-agent", Credentials.basic("a", "b"), sleep=sleeps.append
        )
        with pytest.raises(FatalTransportError, match="TLS failed"):
            client.list_numbers()
    thread.join(timeout=10)
    assert accepted == [1] and sleeps == []


def test_timeout_option_values() -> None:
    assert parse_timeout("30") == (10.0, 30.0)
    assert parse_timeout("2") == (2.0, 2.0)
    assert parse_timeout("5,20") == (5.0, 20.0)
    for bad in ("", "0", "-1", "a", "1,2,3", "99999"):
        with pytest.raises(ValueError, match="is not a timeout"):
            parse_timeout(bad)


def test_messages_are_clipped_at_a_word_boundary() -> None:
    text = "the API answered with a long explanation of what went wrong " * 10
    short = clip(text, 50)
    assert len(short) <= 50 and short.endswith("…")
    assert text.startswith(short[:-1]) and text[len(short) - 1] == " ", "cut where a word ends"
    assert clip("short", 50) == "short"
    assert clip("x" * 80, 50) == "x" * 49 + "…"
