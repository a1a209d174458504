"""AccessToken2 minting: Agora's published test vectors, and byte-identity with the official SDK.

The SDK (`agora_agent.agentkit.token`, a test dependency) draws its issue time from `time.time()`
and its salt from `random.randint`; the tests pin both on the SDK module only, and hide the legacy
`agora_token_builder` package (when importable, the SDK's `generate_rtc_token` silently returns an
"006" token instead: agora-api.md section 14).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import tokens
from reconciler.errors import TokenError
from reconciler.secrets import redact

# Agora's AccessToken2 test vectors (AgoraIO/Tools, DynamicKey/AgoraDynamicKey/python3/test/AccessToken2Test.py).
V_APP_ID = "970CA35de60c44645bbae8a215061b33"
V_CERT = "5CFd2fd1755d40ecb72977518be15d3b"
V_CHANNEL = "7d72365eb983485397e3e3f9d460bdda"
V_UID = 2882341273
V_EXPIRE = 600
V_SALT = 1
V_TS = 1111111

VECTOR_RTC_UID = (
    "007eJxTYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcw"
    "Mk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxgDCaiTj"
)
VECTOR_RTC_UID_0 = (
    "007eJxTYLhzZP08Lxa1Pg57+TcXb/3cZ3wi4V6kbpbOog0G2dOYk20UGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcw"
    "Mk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiQwMADacImo="
)
VECTOR_CHAT_USER = (
    "007eJxTYNAIsnbS3v/A5t2TC6feR15r+6cq8bqAvfaW+tk/Vzz+p6xTYLA0N3B2NDZNSTUzSDYxMTMxTUpKTLVINDI0NTA"
    "zTDI2dv8iwBDBxMDAyADCrEDMCOZzMRhZWBgZmxgamRsDAB+lHrg="
)
VECTOR_CHAT_APP = (
    "007eJxTYNDNaz3snC8huEfHWdz6s98qltq4zqy9fl99Uh0FDvy6F6DAYGlu4OxobJqSamaQbGJiZmKalJSYapFoZGhqYGaYZGzs/kWAIYKJgYGRAYRZgZgJzGdgAACt8hhr"
)


def _vector(service: tokens.Service) -> str:
    return tokens.build(V_APP_ID, V_CERT, [service], issue_ts=V_TS, salt=V_SALT, expire=V_EXPIRE)


def _join_only(account: str) -> tokens.Service:
    return tokens.Service(tokens.SERVICE_RTC, {tokens.PRIVILEGE_JOIN_CHANNEL: V_EXPIRE}, (V_CHANNEL.encode(), account.encode()))


def test_published_vector_rtc_uid() -> None:
    assert _vector(_join_only(tokens.rtc_account(V_UID))) == VECTOR_RTC_UID


def test_published_vector_rtc_uid_0_is_the_empty_account() -> None:
    assert _vector(_join_only(tokens.rtc_account(0))) == VECTOR_RTC_UID_0


def test_published_vector_rtc_string_account_equals_its_uid() -> None:
    assert _vector(_join_only(tokens.rtc_account(str(V_UID)))) == VECTOR_RTC_UID


def test_published_vectors_chat() -> None:
    user = tokens.Service(tokens.SERVICE_CHAT, {1: V_EXPIRE}, (str(V_UID).encode(),))
    app = tokens.Service(tokens.SERVICE_CHAT, {2: V_EXPIRE}, (b"",))
    assert _vector(user) == VECTOR_CHAT_USER
    assert _vector(app) == VECTOR_CHAT_APP


def test_parse_and_verify_round_trip() -> None:
    parsed = tokens.verify(VECTOR_RTC_UID, V_CERT)
    assert (parsed.app_id, parsed.issue_ts, parsed.expire, parsed.salt) == (V_APP_ID, V_TS, V_EXPIRE, V_SALT)
    assert parsed.services == (_join_only(str(V_UID)),)
    assert parsed.expires_at == V_TS + V_EXPIRE
    with pytest.raises(TokenError, match="signature does not match"):
        tokens.verify(VECTOR_RTC_UID, "0" * 32)


@pytest.mark.parametrize("text", ["", "006abc", "007", "007!!!!", "007" + "QUJD", VECTOR_RTC_UID[:-8]])
def test_parse_refuses_what_is_not_a_token(text: str) -> None:
    with pytest.raises(TokenError) as info:
        tokens.parse(text)
    assert text[3:] == "" or text[3:] not in str(info.value)


# --- byte-identity with the official SDK -------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_token() -> Iterator[Any]:
    module = pytest.importorskip("agora_agent.agentkit.token", reason="agora-agents is a test dependency")
    yield module


class _PinnedSdk:
    """The SDK's token module with its clock and salt pinned and the legacy builder hidden."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.ts = 0
        self.salt = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> _PinnedSdk:
        self._saved = {"time": self.module.time, "random": self.module.random}
        self._legacy = sys.modules.get("agora_token_builder", ...)
        sys.modules["agora_token_builder"] = None  # type: ignore[assignment]  # import raises ImportError
        self.module.time = SimpleNamespace(time=lambda: self.ts)
        self.module.random = SimpleNamespace(randint=lambda low, high: self.salt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.time = self._saved["time"]
        self.module.random = self._saved["random"]
        if self._legacy is ...:
            sys.modules.pop("agora_token_builder", None)
        else:
            sys.modules["agora_token_builder"] = self._legacy

    def rtc(self, app_id: str, cert: str, channel: str, uid: int | str, ttl: int) -> str:
        return str(self.module.generate_rtc_token(app_id, cert, channel, uid, self.module.ROLE_PUBLISHER, ttl))

    def rtc_rtm(self, app_id: str, cert: str, channel: str, uid: int | str, ttl: int) -> str:
        if isinstance(uid, int) and uid != 0:
            return str(self.module.generate_convo_ai_token(app_id, cert, channel, uid, ttl, ttl))
        # The SDK's public function takes numeric uids only, and writes uid 0 as the account "0"
        # (usable only by a user named "0"); a string account, and uid 0 as the empty "any uid"
        # account, go through the same internals it uses (the official build_token_with_rtm).
        account = "" if uid == 0 else str(uid)
        m = self.module
        rtc = m._pack_service_rtc(channel, account, {1: ttl, 2: ttl, 3: ttl, 4: ttl})
        rtm = m._pack_service_rtm(account, {1: ttl})
        return str(m._build_access_token2(app_id, cert, ttl, [(1, rtc), (2, rtm)]))


HEX32 = st.text(alphabet="0123456789abcdefABCDEF", min_size=32, max_size=32)
CHANNEL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&()+-:;<=.>?@[]^_{}|~,", min_size=1, max_size=64
)
NUMERIC_UID = st.one_of(st.just(0), st.just(V_UID), st.integers(min_value=1, max_value=2**32 - 1))
STRING_UID = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: s != "")
TTL = st.integers(min_value=tokens.MIN_TTL, max_value=tokens.MAX_TTL)
ISSUE_TS = st.integers(min_value=1, max_value=2**32 - 1 - tokens.MAX_TTL)
SALT = st.integers(min_value=1, max_value=tokens.MAX_SALT)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    app_id=HEX32, cert=HEX32, channel=CHANNEL, uid=st.one_of(NUMERIC_UID, STRING_UID), ttl=TTL, ts=ISSUE_TS, salt=SALT, rtm=st.booleans()
)
def test_minted_token_is_byte_identical_to_the_sdk(
    sdk_token: Any, app_id: str, cert: str, channel: str, uid: int | str, ttl: int, ts: int, salt: int, rtm: bool
) -> None:
    minted = tokens.mint_agent_token(app_id, cert, channel, uid, ttl=ttl, rtm=rtm, issued_at=ts, salt=salt)
    with _PinnedSdk(sdk_token) as sdk:
        sdk.ts, sdk.salt = ts, salt
        expected = sdk.rtc_rtm(app_id, cert, channel, uid, ttl) if rtm else sdk.rtc(app_id, cert, channel, uid, ttl)
    assert expected.startswith("007")
    assert minted.token == expected
    assert (minted.issued_at, minted.expires_at) == (ts, ts + ttl)
    parsed = tokens.verify(minted.token, cert)
    assert [s.type for s in parsed.services] == ([tokens.SERVICE_RTC, tokens.SERVICE_RTM] if rtm else [tokens.SERVICE_RTC])
    assert parsed.services[0].fields[0] == channel.encode()
    assert redact(f'{{"token": "{minted.token}"}}') == '{"token": "***"}'  # masked by its shape, never registered


@pytest.mark.parametrize(
    ("channel", "uid", "rtm"),
    [
        ("lobby", 1001, False),
        ("lobby", 1001, True),
        ("lobby", 0, False),
        ("lobby", 0, True),
        ("room with spaces", "agent-concierge", False),
        ("room with spaces", "agent-concierge", True),
        ("ÜnicødeRoom", "代理", True),
        (V_CHANNEL, 2**32 - 1, True),
    ],
)
def test_minted_token_table(sdk_token: Any, channel: str, uid: int | str, rtm: bool) -> None:
    with _PinnedSdk(sdk_token) as sdk:
        sdk.ts, sdk.salt = 1_764_000_000, 4242
        expected = sdk.rtc_rtm(V_APP_ID, V_CERT, channel, uid, 3600) if rtm else sdk.rtc(V_APP_ID, V_CERT, channel, uid, 3600)
    minted = tokens.mint_agent_token(V_APP_ID, V_CERT, channel, uid, ttl=3600, rtm=rtm, issued_at=1_764_000_000, salt=4242)
    assert minted.token == expected


def test_uid_0_with_rtm_is_the_any_uid_account_not_the_sdk_helpers_0(sdk_token: Any) -> None:
    """The one documented departure from `generate_convo_ai_token`: uid 0 means any uid."""
    minted = tokens.mint_agent_token(V_APP_ID, V_CERT, "c", 0, ttl=600, rtm=True, issued_at=V_TS, salt=V_SALT)
    rtc, rtm = tokens.parse(minted.token).services
    assert rtc.fields == (b"c", b"") and rtm.fields == (b"",)
    with _PinnedSdk(sdk_token) as sdk:
        sdk.ts, sdk.salt = V_TS, V_SALT
        helper = str(sdk_token.generate_convo_ai_token(V_APP_ID, V_CERT, "c", 0, 600, 600))
    assert tokens.parse(helper).services[0].fields == (b"c", b"0")


def test_the_pin_is_real(sdk_token: Any) -> None:
    """Different salts give different tokens: the comparison above cannot pass by accident."""
    with _PinnedSdk(sdk_token) as sdk:
        sdk.ts, sdk.salt = 1_764_000_000, 1
        first = sdk.rtc(V_APP_ID, V_CERT, "c", 5, 600)
        sdk.salt = 2
        second = sdk.rtc(V_APP_ID, V_CERT, "c", 5, 600)
    assert first != second


# --- the minting policy ------------------------------------------------------------------------


def test_minted_token_hides_itself_in_repr() -> None:
    minted = tokens.mint_agent_token(V_APP_ID, V_CERT, "c", 7, ttl=600, rtm=False, issued_at=1000, salt=3)
    assert minted.token not in repr(minted)
    assert minted.ttl == 600
    assert minted.renew_at() == 1000 + 450  # a quarter of the lifetime left


@pytest.mark.parametrize("ttl", [0, 9, tokens.MAX_TTL + 1])
def test_ttl_bounds(ttl: int) -> None:
    with pytest.raises(TokenError, match="10 s to 86400 s"):
        tokens.mint_agent_token(V_APP_ID, V_CERT, "c", 7, ttl=ttl, rtm=False, issued_at=1000, salt=3)


@pytest.mark.parametrize(
    ("app_id", "cert", "named"),
    [
        (V_APP_ID[:-1], V_CERT, "app id"),
        (V_APP_ID, V_CERT + " ", "app certificate"),
        (V_APP_ID, "z" * 32, "app certificate"),
    ],
)
def test_bad_credentials_are_named_never_shown(app_id: str, cert: str, named: str) -> None:
    with pytest.raises(TokenError) as info:
        tokens.mint_agent_token(app_id, cert, "c", 7, ttl=600, rtm=False, issued_at=1000, salt=3)
    assert named in str(info.value)
    assert cert.strip() not in str(info.value) and app_id not in str(info.value)


@pytest.mark.parametrize("uid", [-1, 2**32, True, ""])
def test_bad_uids(uid: Any) -> None:
    with pytest.raises(TokenError):
        tokens.mint_agent_token(V_APP_ID, V_CERT, "c", uid, ttl=600, rtm=False, issued_at=1000, salt=3)


def test_fresh_salt_is_in_the_official_range() -> None:
    import random

    rng = random.Random(7)
    assert all(1 <= tokens.fresh_salt(rng) <= tokens.MAX_SALT for _ in range(1000))
