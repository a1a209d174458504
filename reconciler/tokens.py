"""AccessToken2 ("007") tokens for RTC and RTM: packing, signing, parsing, and the minting policy.

Pure functions (the issue time and the salt are arguments; `fresh_salt()` is the one helper that
draws randomness). The format, as Agora publishes it (AgoraIO/Tools, DynamicKey/AgoraDynamicKey,
AccessToken2), all integers little-endian::

    token        = "007" + base64(zlib(string(signature) + signing_info))
    signing_info = string(app_id) + u32(issue_ts) + u32(expire) + u32(salt) + u16(n) + service * n
    service      = u16(type) + u16(count) + (u16(privilege) + u32(expire)) * count  (sorted) + fields
    signature    = HMAC-SHA256(key, signing_info)
    key          = HMAC-SHA256(u32(salt), HMAC-SHA256(u32(issue_ts), certificate))
    string(b)    = u16(len(b)) + b

RTC (type 1) has the fields channel and account (uid 0 is the empty account, "any uid"); RTM
(type 2) has the user id. `expire` values are seconds from `issue_ts`.

`mint_agent_token` (and `Minter`, which holds the certificate, TTL and clock) is what the reconciler uses; for the same inputs it is byte-identical to the
official SDK (`agora_agent.agentkit.token.generate_rtc_token` for RTC alone, with
`privilege_expire` equal to the token's expiry; `generate_convo_ai_token` for RTC+RTM). A minted
token and the certificate are secrets: `MintedToken` never shows its token in `repr`, and error
messages name lengths, never values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .errors import TokenError

VERSION = "007"
MIN_TTL = 10  # seconds; shorter tokens expire before a cycle can renew them
MAX_TTL = 86_400  # Agora's cap for RTC tokens (24 h)
CREDENTIAL_LENGTH = 32
MAX_SALT = 99_999_999

SERVICE_RTC = 1
SERVICE_RTM = 2
SERVICE_CHAT = 5

PRIVILEGE_JOIN_CHANNEL = 1
PRIVILEGE_PUBLISH_AUDIO = 2
PRIVILEGE_PUBLISH_VIDEO = 3
PRIVILEGE_PUBLISH_DATA = 4
PRIVILEGE_RTM_LOGIN = 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Service:
    """One service of a token: its type, privileges (privilege -> expire seconds) and string fields."""

    type: int
    privileges: Mapping[int, int]
    fields: tuple[bytes, ...] = ()

    def pack(self) -> bytes:
        out = [_U16.pack(self.type), _U16.pack(len(self.privileges))]
        for privilege in sorted(self.privileges):
            out.append(_U16.pack(privilege) + _U32.pack(self.privileges[privilege]))
        out.extend(_pack_string(f) for f in self.fields)
        return b"".join(out)


def rtc_service(channel: str, account: str, privilege_expire: int, *, publisher: bool = True) -> Service:
    """RTC: join the channel (and publish audio, video, data as a publisher) as `account`."""
    privileges = [PRIVILEGE_JOIN_CHANNEL]
    if publisher:
        privileges += [PRIVILEGE_PUBLISH_AUDIO, PRIVILEGE_PUBLISH_VIDEO, PRIVILEGE_PUBLISH_DATA]
    return Service(SERVICE_RTC, dict.fromkeys(privileges, privilege_expire), (channel.encode(), account.encode()))


def rtm_service(user_id: str, login_expire: int) -> Service:
    """RTM: log in as `user_id`."""
    return Service(SERVICE_RTM, {PRIVILEGE_RTM_LOGIN: login_expire}, (user_id.encode(),))


def build(app_id: str, certificate: str, services: Iterable[Service], *, issue_ts: int, salt: int, expire: int) -> str:
    """Sign and encode a token holding `services` in the order given (one per type)."""
    check_credentials(app_id, certificate)
    listed = list(services)
    if not listed:
        raise TokenError("a token needs at least one service")
    for name, value in (("issue_ts", issue_ts), ("salt", salt), ("expire", expire)):
        _check_u32(name, value)
    signing_info = (
        _pack_string(app_id.encode())
        + _U32.pack(issue_ts)
        + _U32.pack(expire)
        + _U32.pack(salt)
        + _U16.pack(len(listed))
        + b"".join(s.pack() for s in listed)
    )
    signature = hmac.new(_signing_key(certificate, issue_ts, salt), signing_info, hashlib.sha256).digest()
    return VERSION + base64.b64encode(zlib.compress(_pack_string(signature) + signing_info)).decode("ascii")


def _signing_key(certificate: str, issue_ts: int, salt: int) -> bytes:
    key = hmac.new(_U32.pack(issue_ts), certificate.encode(), hashlib.sha256).digest()
    return hmac.new(_U32.pack(salt), key, hashlib.sha256).digest()


@dataclass(frozen=True)
class ParsedToken:
    """The readable content of a token (its signature is checked by `verify`)."""

    app_id: str
    issue_ts: int
    expire: int
    salt: int
    services: tuple[Service, ...]
    signature: bytes = field(repr=False)
    signing_info: bytes = field(repr=False)

    @property
    def expires_at(self) -> int:
        return self.issue_ts + self.expire


_SERVICE_FIELDS = {SERVICE_RTC: 2, SERVICE_RTM: 1, 3: 2, 4: 0, SERVICE_CHAT: 1}


def parse(token: str) -> ParsedToken:
    """Decode a "007" token; TokenError when it is not one (the message never quotes it)."""
    if not token.startswith(VERSION):
        raise TokenError("not an AccessToken2 token (it does not start with 007)")
    try:
        buffer = zlib.decompress(base64.b64decode(token[len(VERSION) :], validate=True))
        reader = _Reader(buffer)
        signature = reader.string()
        start = reader.offset
        app_id = reader.string().decode()
        issue_ts, expire, salt = reader.u32(), reader.u32(), reader.u32()
        services = tuple(_read_service(reader) for _ in range(reader.u16()))
        signing_info = buffer[start : reader.offset]
    except (binascii.Error, zlib.error, struct.error, UnicodeDecodeError, KeyError) as exc:
        raise TokenError(f"malformed AccessToken2 token ({type(exc).__name__})") from None
    return ParsedToken(app_id, issue_ts, expire, salt, services, signature, signing_info)


def verify(token: str, certificate: str) -> ParsedToken:
    """Parse and check the signature against `certificate`; TokenError when it does not match."""
    parsed = parse(token)
    expected = hmac.new(_signing_key(certificate, parsed.issue_ts, parsed.salt), parsed.signing_info, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, parsed.signature):
        raise TokenError("the token's signature does not match the certificate")
    return parsed


def _read_service(reader: _Reader) -> Service:
    kind = reader.u16()
    privileges = {reader.u16(): reader.u32() for _ in range(reader.u16())}
    return Service(kind, privileges, tuple(reader.string() for _ in range(_SERVICE_FIELDS[kind])))


class _Reader:
    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer
        self.offset = 0

    def _take(self, size: int) -> bytes:
        chunk = self.buffer[self.offset : self.offset + size]
        if len(chunk) != size:
            raise struct.error("truncated")
        self.offset += size
        return chunk

    def u16(self) -> int:
        return int(_U16.unpack(self._take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def string(self) -> bytes:
        return self._take(self.u16())


@dataclass(frozen=True)
class MintedToken:
    """A freshly minted token with its validity window (epoch seconds). `repr` hides the token."""

    token: str = field(repr=False)
    issued_at: int
    expires_at: int

    @property
    def ttl(self) -> int:
        return self.expires_at - self.issued_at

    def renew_at(self) -> int:
        """The moment a quarter of its lifetime is left: after it, the token is renewed."""
        return renew_at(self.issued_at, self.expires_at)


def renew_at(issued_at: int, expires_at: int) -> int:
    return expires_at - (expires_at - issued_at) // 4


def rtc_account(uid: int | str) -> str:
    """The account field of an RTC service: a numeric uid as digits (0 = empty), a string as is."""
    if isinstance(uid, bool):
        raise TokenError("an RTC uid is a number or a string account")
    if isinstance(uid, int):
        _check_u32("uid", uid)
        return "" if uid == 0 else str(uid)
    if not uid or len(uid.encode()) > 255:
        raise TokenError("a string RTC account is 1 to 255 bytes")
    return uid


def mint_agent_token(
    app_id: str, certificate: str, channel: str, uid: int | str, *, ttl: int, rtm: bool, issued_at: int, salt: int
) -> MintedToken:
    """The token an agent joins with: RTC publisher privileges (and RTM login when `rtm`) for `ttl`.

    RTC alone equals the SDK's `generate_rtc_token(app_id, cert, channel, uid, 1, ttl)`; with RTM it
    equals `generate_convo_ai_token(app_id, cert, channel, uid, ttl, ttl)` for every uid but 0.
    For uid 0 ("any uid": the agent joins with a random one) that helper writes the account "0",
    which only a user literally named "0" could use; we follow the official
    `RtcTokenBuilder2.build_token_with_rtm` with the empty account instead, as for RTC alone."""
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise TokenError(f"a token lives {MIN_TTL} s to {MAX_TTL} s, not {ttl} s")
    account = rtc_account(uid)
    services = [rtc_service(channel, account, ttl)]
    if rtm:
        services.append(rtm_service(account, ttl))
    token = build(app_id, certificate, services, issue_ts=issued_at, salt=salt, expire=ttl)
    return MintedToken(token, issued_at, issued_at + ttl)


@dataclass(frozen=True)
class Minter:
    """Mints agent tokens with one certificate and TTL, on an injected clock and salt source."""

    certificate: str = field(repr=False)
    ttl: int
    clock: Callable[[], float] = field(default=time.time, compare=False)
    salt: Callable[[], int] = field(default=lambda: fresh_salt(), compare=False)

    def mint(self, app_id: str, channel: str, uid: int | str, *, rtm: bool) -> MintedToken:
        return mint_agent_token(
            app_id, self.certificate, channel, uid, ttl=self.ttl, rtm=rtm, issued_at=int(self.clock()), salt=self.salt()
        )


def fresh_salt(rng: random.Random | None = None) -> int:
    """A salt as the official builders draw it (1..99,999,999), from the system's CSPRNG by default."""
    return (rng or random.SystemRandom()).randint(1, MAX_SALT)


def check_credentials(app_id: str, certificate: str) -> None:
    """Agora accepts only 32 hexadecimal characters for both; the message names lengths, never values."""
    wrong = [name for name, value in (("app id", app_id), ("app certificate", certificate)) if not _is_hex32(value)]
    if wrong:
        raise TokenError(f"cannot mint a token: the {' and the '.join(wrong)} must be {CREDENTIAL_LENGTH} hexadecimal characters")


def _is_hex32(value: str) -> bool:
    if len(value) != CREDENTIAL_LENGTH:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise TokenError(f"{name} must fit in 32 bits")


def _pack_string(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise TokenError("a token field is longer than 65,535 bytes")
    return _U16.pack(len(data)) + data
