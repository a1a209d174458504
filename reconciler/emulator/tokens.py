"""RTC tokens as the emulator checks them: its own AccessToken2 ("007") parser and verifier.

Written from Agora's published format (AgoraIO/Tools, DynamicKey/AgoraDynamicKey) and
independently of the tool's token builder, so a builder bug is not mirrored here. A token is
`"007" + base64(zlib(signature || signed))`, where `signed` packs, little-endian with 16-bit
length prefixes: the app id, the issue time, the lifetime in seconds, a salt and a list of
services; the RTC service (type 1) carries a privilege map (privilege -> lifetime in seconds,
0 = the token's own), the channel name and the uid (empty for uid 0, which admits any uid). The
signature is HMAC-SHA256(key, signed) with key = HMAC(salt, HMAC(issue_ts, certificate)).
A token lives at most 24 hours from its issue time, whatever it claims.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass, field

VERSION = "007"
SERVICE_RTC = 1
SERVICE_RTM = 2
PRIVILEGE_JOIN_CHANNEL = 1
MAX_LIFETIME_S = 86400


class TokenError(ValueError):
    """Why a token is refused (the message never contains the token)."""


@dataclass(frozen=True)
class RtcGrant:
    channel: str
    uid: str  # "" admits any uid
    privileges: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Token:
    app_id: str
    issue_ts: int
    expire: int
    salt: int
    signature: bytes
    signed: bytes
    rtc: tuple[RtcGrant, ...] = ()
    rtm_users: tuple[str, ...] = ()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise TokenError("the token is truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def uint16(self) -> int:
        value: int = struct.unpack("<H", self.take(2))[0]
        return value

    def uint32(self) -> int:
        value: int = struct.unpack("<I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint16())

    def text(self) -> str:
        try:
            return self.string().decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError("the token holds text that is not UTF-8") from None

    def privileges(self) -> dict[int, int]:
        return {self.uint16(): self.uint32() for _ in range(self.uint16())}


def parse(token: str) -> Token:
    """Decode a "007" token (no signature check)."""
    if not isinstance(token, str) or not token.startswith(VERSION):
        raise TokenError("not an AccessToken2 token (it must start with 007)")
    try:
        raw = zlib.decompress(base64.b64decode(token[len(VERSION) :], validate=True))
    except (binascii.Error, ValueError, zlib.error):
        raise TokenError("the token is not valid base64-encoded zlib data") from None
    outer = _Reader(raw)
    signature = outer.string()
    signed = raw[outer.pos :]
    reader = _Reader(signed)
    app_id = reader.text()
    issue_ts, expire, salt = reader.uint32(), reader.uint32(), reader.uint32()
    rtc: list[RtcGrant] = []
    rtm: list[str] = []
    for _ in range(reader.uint16()):
        kind = reader.uint16()
        privileges = reader.privileges()
        if kind == SERVICE_RTC:
            channel = reader.text()
            rtc.append(RtcGrant(channel, reader.text(), privileges))
        elif kind == SERVICE_RTM:
            rtm.append(reader.text())
        else:
            break  # a service this parser does not know: the rest is still covered by the signature
    return Token(app_id, issue_ts, expire, salt, signature, signed, tuple(rtc), tuple(rtm))


def signature_of(token: Token, certificate: str) -> bytes:
    key = hmac.new(struct.pack("<I", token.issue_ts), certificate.encode("utf-8"), hashlib.sha256).digest()
    key = hmac.new(struct.pack("<I", token.salt), key, hashlib.sha256).digest()
    return hmac.new(key, token.signed, hashlib.sha256).digest()


def expires_at(token: Token, grant: RtcGrant) -> int:
    """When the join privilege of `grant` ends: the token's lifetime, the privilege's, and the 24 h cap."""
    lifetime = min(token.expire, MAX_LIFETIME_S)
    privilege = grant.privileges.get(PRIVILEGE_JOIN_CHANNEL, 0)
    if privilege:
        lifetime = min(lifetime, privilege)
    return token.issue_ts + lifetime


def verify(token: str, *, certificate: str, app_id: str, channel: str, uid: str, now: float) -> float:
    """Check a token for joining `channel` as `uid` in `app_id`; return when it expires, else `TokenError`."""
    parsed = parse(token)
    if not hmac.compare_digest(parsed.signature, signature_of(parsed, certificate)):
        raise TokenError("the token's signature does not match the app certificate")
    if parsed.app_id != app_id:
        raise TokenError("the token was issued for another app id")
    grants = [g for g in parsed.rtc if PRIVILEGE_JOIN_CHANNEL in g.privileges]
    if not grants:
        raise TokenError("the token grants no RTC join-channel privilege")
    for_channel = [g for g in grants if g.channel == channel]
    if not for_channel:
        raise TokenError(f"the token is not valid for channel {channel!r}")
    matching = [g for g in for_channel if g.uid in ("", uid)]
    if not matching:
        raise TokenError(f"the token is not valid for uid {uid!r}")
    expiry = max(expires_at(parsed, g) for g in matching)
    if now >= expiry:
        raise TokenError(f"the token expired {int(now - expiry)} s ago (on the emulator's clock)")
    return float(expiry)
