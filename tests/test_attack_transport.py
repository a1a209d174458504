"""Attack on the transport's hand-built calls (commit 88ed7e3): for any phone number, app id,
agent id, body and base URL the operations can be given, the call is byte for byte the one
`PreparedRequest.prepare` builds (URL quoting of `+`, spaces, `%`, `/`, `?`, `#`, unicode; JSON
bodies with non-ASCII), derandomized."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.client import Client, Credentials

TEXT = st.text(alphabet=st.sampled_from(list("+ %/?#&=;:@!$'()*,[]~_-.aZ09üé€\u00a0😀\t")), min_size=1, max_size=12).filter(
    lambda t: t.strip(".") != ""  # dot segments: see the xfail test below
)
BASES = st.sampled_from(
    [
        "http://127.0.0.1:8080/api/conversational-ai-agent",
        "https://Bücher.Example/gw/api/conversational-ai-agent",
        "http://[::1]:9/a b/c%2Fd",
        "https://api.example.com",
    ]
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)


def _paths(client: Client, number: str, app: str, agent: str) -> list[str]:
    return [client._number_path(number), client._project(app, "agents", agent, "leave"), client._project(app, "join")]


@settings(max_examples=600, derandomize=True, deadline=None)
@given(BASES, TEXT, TEXT, TEXT, st.sampled_from(["GET", "POST", "PATCH", "DELETE"]), st.one_of(st.none(), JSON))
def test_a_hand_built_call_is_the_one_requests_prepares(base: str, number: str, app: str, agent: str, method: str, body: Any) -> None:
    client = Client(base, Credentials.basic("a", "b", secret=False))
    for path in _paths(client, number, app, agent):
        built = client._prepare(method, path, None, body)
        expected = requests.PreparedRequest()
        expected.prepare(method=method, url=f"{client.base_url}/{path}", headers=client.session.headers, json=body)
        assert (built.method, built.url, built.body) == (expected.method, expected.url, expected.body)
        assert dict(built.headers) == dict(expected.headers)


@pytest.mark.xfail(
    strict=True,
    reason="attack: an app id or agent id of '.' or '..' is sent as a dot segment (quote() keeps dots): "
    "`projects/../agents` is `/v2/agents` once any server or proxy normalises it (prepare() did it itself at "
    "0755286, the hand-built call leaves it to the server): another resource is addressed",
)
@pytest.mark.parametrize(("app", "agent"), [("..", "A1"), (".", "A1"), ("app", ".."), ("app", ".")])
def test_an_id_made_of_dots_stays_one_path_segment(app: str, agent: str) -> None:
    client = Client("http://127.0.0.1:8080/api", Credentials.basic("a", "b", secret=False))
    for path in (client._project(app, "agents"), client._project(app, "agents", agent, "leave")):
        segments = urlsplit(client._prepare("POST", path, None, None).url).path.split("/")
        assert "." not in segments and ".." not in segments, segments


@pytest.mark.xfail(
    strict=True,
    reason="attack: with credentials in the endpoint URL (https://user:pw@gateway/...), prepare() sent them as "
    "Basic auth (0755286); the hand-built call sends the configured credentials instead, silently",
)
def test_credentials_in_the_endpoint_url_are_sent_as_before() -> None:
    client = Client("http://user:pw@host.example:81/p", Credentials.basic("a", "b", secret=False))
    built = client._prepare("GET", "v2/phone-numbers", None, None)
    expected = requests.PreparedRequest()
    expected.prepare(method="GET", url=f"{client.base_url}/v2/phone-numbers", headers=client.session.headers)
    assert built.headers["Authorization"] == expected.headers["Authorization"]
