"""RTC token verification by the emulator (issue 12): its own AccessToken2 parser against the official builders.

Tokens are built by the official SDK (`agora_agent.agentkit.token`) and checked by the emulator
over real loopback HTTP: good ones are accepted; a tampered signature, another channel, uid, app
id or certificate, or an expired token are refused with 403 `invalid_token`; an agent whose token
expires on the emulator's clock becomes FAILED ("token expired"), unless `update` brought a fresh one.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import pytest
import requests

from reconciler.emulator import tokens

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator, agent_props, basic_headers
from .test_emulator import call

sdk_token = pytest.importorskip("agora_agent.agentkit.token", reason="the agora-agents SDK is a test dependency")

APP = "970ca35de60c44645bbae8a215061b33"
OTHER_APP = "0123456789abcdef0123456789abcdef"
CERT = "5cfd2fd1755d40ecb72977518be15d3b"
OTHER_CERT = "ffffffffffffffffffffffffffffffff"
H = basic_headers()

# Agora's published AccessToken2 test vectors (AgoraIO/Tools, python3/test/AccessToken2Test.py):
# issue time 1111111, expire 600, salt 1, join privilege 600.
VECTOR_APP, VECTOR_CERT = "970CA35de60c44645bbae8a215061b33", "5CFd2fd1755d40ecb72977518be15d3b"
VECTOR_CHANNEL = "7d72365eb983485397e3e3f9d460bdda"
VECTOR_UID = (
    "007eJxTYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4"
    "CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxgDCaiTj"
)
VECTOR_UID_0 = (
    "007eJxTYLhzZP08Lxa1Pg57+TcXb/3cZ3wi4V6kbpbOog0G2dOYk20UGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4"
    "CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiQwMADacImo="
)


# --------------------------------------------------------------------------- the parser alone
def test_parser_reads_the_published_vectors() -> None:
    parsed = tokens.parse(VECTOR_UID)
    assert (parsed.app_id, parsed.issue_ts, parsed.expire, parsed.salt) == (VECTOR_APP, 1111111, 600, 1)
    assert parsed.rtc == (tokens.RtcGrant(VECTOR_CHANNEL, "2882341273", {1: 600}),)
    assert tokens.parse(VECTOR_UID_0).rtc[0].uid == "", "uid 0 is packed as an empty account"
    expiry = tokens.verify(VECTOR_UID, certificate=VECTOR_CERT, app_id=VECTOR_APP, channel=VECTOR_CHANNEL, uid="2882341273", now=1111200)
    assert expiry == 1111711
    assert tokens.verify(VECTOR_UID_0, certificate=VECTOR_CERT, app_id=VECTOR_APP, channel=VECTOR_CHANNEL, uid="42", now=1111200)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify(VECTOR_UID, certificate=VECTOR_CERT, app_id=VECTOR_APP, channel=VECTOR_CHANNEL, uid="2882341273", now=1111711)
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify(VECTOR_UID, certificate=CERT, app_id=VECTOR_APP, channel=VECTOR_CHANNEL, uid="2882341273", now=1111200)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "006abc",
        "007",
        "007!!!",
        "007" + base64.b64encode(b"not zlib").decode(),
        "007" + base64.b64encode(zlib.compress(b"\x05\x00ab")).decode(),
    ],
)
def test_parser_refuses_garbage_with_a_token_error(bad: str) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.parse(bad)


# --------------------------------------------------------------------------- over HTTP
@pytest.fixture
def certified(emu: Emulator) -> Emulator:
    emu.admin("POST", "config", {"app_certificate": CERT})
    return emu


def rtc(channel: str = "room", uid: int = 1001, expiry: int = 3600, app: str = APP, cert: str = CERT) -> str:
    token: str = sdk_token.generate_rtc_token(app, cert, channel, uid, expiry_seconds=expiry)
    return token


def convo(channel: str = "room", uid: int = 1001, expire: int = 3600, privilege: int = 0) -> str:
    token: str = sdk_token.generate_convo_ai_token(APP, CERT, channel, uid, token_expire=expire, privilege_expire=privilege)
    return token


def account_token(channel: str, account: str, expire: int = 3600) -> str:
    """An RTC token for a string user account, through the SDK's AccessToken2 packer."""
    service = sdk_token._pack_service_rtc(channel, account, {1: expire, 2: expire, 3: expire, 4: expire})
    token: str = sdk_token._build_access_token2(APP, CERT, expire, [(1, service)])
    return token


def tampered(token: str) -> str:
    raw = bytearray(zlib.decompress(base64.b64decode(token[3:])))
    raw[5] ^= 0x01  # inside the signature
    return "007" + base64.b64encode(zlib.compress(bytes(raw))).decode()


def start(emu: Emulator, token: str, name: str = "agent", channel: str = "room", uid: str = "1001", app: str = APP) -> requests.Response:
    props = {**agent_props(channel, uid), "token": token}
    return call(emu, "POST", f"projects/{app}/join", {"name": name, "preset": "p1", "properties": props})


def status(emu: Emulator, agent_id: str) -> dict[str, Any]:
    result: dict[str, Any] = call(emu, "GET", f"projects/{APP}/agents/{agent_id}").json()
    return result


def test_tokens_from_the_official_builders_are_accepted(certified: Emulator) -> None:
    assert start(certified, rtc(), "rtc").status_code == 200
    assert start(certified, convo(), "convo").status_code == 200
    assert start(certified, rtc(uid=0), "any-uid", uid="777").status_code == 200, "a uid-0 token admits any uid"
    assert start(certified, account_token("room", "agent-account"), "account", uid="agent-account").status_code == 200


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (lambda: tampered(rtc()), {}),
        (lambda: rtc(channel="elsewhere"), {}),
        (lambda: rtc(uid=1002), {}),
        (lambda: account_token("room", "someone-else"), {"uid": "agent-account"}),
        (lambda: rtc(app=OTHER_APP), {}),
        (lambda: rtc(cert=OTHER_CERT), {}),
        (lambda: "007eJxTYLh-rtc-token-9d1c3f", {}),
        (lambda: "plain-Secret-Value-123", {}),
    ],
)
def test_invalid_tokens_are_refused_with_403(certified: Emulator, make: Any, kwargs: dict[str, Any]) -> None:
    token = make()
    response = start(certified, token, **kwargs)
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "invalid_token" and response.json()["detail"]
    assert token not in response.text, "the token is never echoed"
    assert certified.agents(APP) == []


def test_expired_token_is_refused(certified: Emulator) -> None:
    token = rtc(expiry=60)
    certified.advance(61)
    response = start(certified, token)
    assert (response.status_code, response.json()["reason"]) == (403, "invalid_token")
    assert "expired" in response.json()["detail"]


def test_an_agent_fails_when_its_token_expires_on_the_emulator_clock(certified: Emulator) -> None:
    agent_id = start(certified, rtc(expiry=600)).json()["agent_id"]
    certified.advance(590)
    assert status(certified, agent_id)["status"] == "RUNNING"
    certified.advance(20)
    failed = status(certified, agent_id)
    assert (failed["status"], failed["message"]) == ("FAILED", "token expired")
    listed = call(certified, "GET", f"projects/{APP}/agents", params={"from_time": 0, "state": "6"}).json()["data"]["list"]
    assert [a["agent_id"] for a in listed] == [agent_id]


def test_the_join_privilege_expiry_counts(certified: Emulator) -> None:
    agent_id = start(certified, convo(expire=3600, privilege=600)).json()["agent_id"]
    certified.advance(610)
    assert status(certified, agent_id)["status"] == "FAILED"


def test_an_update_with_a_fresh_token_extends_the_agent(certified: Emulator) -> None:
    agent_id = start(certified, rtc(expiry=600)).json()["agent_id"]
    certified.advance(500)
    refused = call(certified, "POST", f"projects/{APP}/agents/{agent_id}/update", {"properties": {"token": rtc(channel="other")}})
    assert (refused.status_code, refused.json()["reason"]) == (403, "invalid_token")
    fresh = rtc(expiry=3600)
    updated = call(certified, "POST", f"projects/{APP}/agents/{agent_id}/update", {"properties": {"token": fresh}})
    assert updated.status_code == 200
    certified.advance(200)  # past the first token's expiry
    assert status(certified, agent_id)["status"] == "RUNNING"
    certified.advance(3000)
    assert (status(certified, agent_id)["status"], status(certified, agent_id)["message"]) == ("FAILED", "token expired")


def test_without_a_certificate_tokens_are_not_checked(emu: Emulator) -> None:
    agent_id = start(emu, "tok").json()["agent_id"]
    emu.advance(3 * 86400 - 10)
    assert status(emu, agent_id)["status"] == "RUNNING"


def test_the_certificate_is_never_shown_and_reset_clears_it(certified: Emulator) -> None:
    config = certified.admin("GET", "config")
    assert config["app_certificate"] is True and CERT not in str(config)
    certified.reset()
    assert certified.admin("GET", "config")["app_certificate"] is False


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_takes_the_certificate_from_a_flag_or_the_environment(serve_emulator: Any, how: str) -> None:
    emu = serve_emulator("--app-certificate", CERT) if how == "flag" else serve_emulator(env={"AGORA_APP_CERTIFICATE": CERT + "\n"})
    emu.reset()
    assert start(emu, "tok").status_code == 403
    assert start(emu, rtc()).status_code == 200


def test_the_official_sdk_starts_and_renews_with_verified_tokens(certified: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    agora_agent = pytest.importorskip("agora_agent", reason="the agora-agents SDK is a test dependency")
    monkeypatch.setenv("AGORA_AGENTS_API_BASE_URL", certified.url)
    sdk = agora_agent.Agora(
        area=agora_agent.Area.US, app_id=APP, app_certificate=CERT, customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET
    )
    started = sdk.agents.start(APP, name="sdk-agent", preset="p1", properties={**agent_props("room"), "token": convo(expire=600)})
    certified.advance(500)
    sdk.agents.update(APP, started.agent_id, properties={"token": convo(expire=7200)})
    certified.advance(600)
    assert sdk.agents.get(APP, started.agent_id).status == "RUNNING"
    with pytest.raises(Exception) as refused:
        sdk.agents.start(APP, name="sdk-agent-2", preset="p1", properties={**agent_props("room"), "token": tampered(convo())})
    assert getattr(refused.value, "status_code", None) == 403
