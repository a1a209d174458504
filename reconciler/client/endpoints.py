"""Where the Agora API is and who calls it: endpoint resolution (regions, URLs, the local
emulator's base URL) and credentials from the environment (Basic auth or a token), registered with
the redactor so they never reach output.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import CredentialsError
from ..secrets import REDACTOR

SERVICE_PATH = "/api/conversational-ai-agent"
DEFAULT_BASE_URL = "https://api.agora.io" + SERVICE_PATH
REGIONS = {
    "us": "https://api-us-west-1.agora.io" + SERVICE_PATH,
    "eu": "https://api-eu-west-1.agora.io" + SERVICE_PATH,
    "ap": "https://api-ap-southeast-1.agora.io" + SERVICE_PATH,
    "cn": "https://api-cn-east-1.sd-rtn.com/cn" + SERVICE_PATH,
}
LOCAL_BASE_URL = "http://emulator.local" + SERVICE_PATH
ENV_VARS = "AGORA_CUSTOMER_ID + AGORA_CUSTOMER_SECRET, or AGORA_AUTH_TOKEN"


def resolve_endpoint(endpoint: str | None) -> str:
    """`us`/`eu`/`ap`/`cn`, a URL, or None (Agora's global URL) -> the API base URL.

    A bare origin (`http://127.0.0.1:8080`) gets the service path appended, as the SDK does.
    `local` is not resolved here: the caller wires the in-process emulator instead.
    """
    if not endpoint:
        return DEFAULT_BASE_URL
    if endpoint.lower() in REGIONS:
        return REGIONS[endpoint.lower()]
    parts = urlsplit(endpoint)
    refuse_userinfo(parts.netloc)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CredentialsError(f"endpoint {endpoint!r} is not one of local, us, eu, ap, cn or an http(s):// URL")
    path = parts.path.rstrip("/")
    if not path:
        path = SERVICE_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


def refuse_userinfo(netloc: str) -> None:
    """An endpoint URL never carries credentials (`user:password@host`): they would be sent in
    place of the configured ones and shown wherever the URL is. Says so without repeating them."""
    if "@" in netloc:
        host = netloc.rpartition("@")[2]
        raise CredentialsError(f"the endpoint URL for {host} carries credentials (user:password@): remove them and set {ENV_VARS} instead")


_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header value can carry as is


@dataclass(frozen=True)
class Credentials:
    """The Authorization header value; `repr` never shows it."""

    header: str
    kind: str  # "basic" | "token"

    def __repr__(self) -> str:
        return f"Credentials(kind={self.kind!r})"

    @classmethod
    def basic(cls, customer_id: str, customer_secret: str, *, secret: bool = True) -> Credentials:
        """Basic auth. `secret=False` for built-in credentials (the embedded local API), which are
        not secrets and must not mask ordinary words."""
        customer_id, customer_secret = customer_id.strip(), customer_secret.strip()
        if ":" in customer_id:
            raise CredentialsError("AGORA_CUSTOMER_ID contains ':', which Basic auth cannot carry; check its value")
        token = base64.b64encode(f"{customer_id}:{customer_secret}".encode()).decode()
        if secret:
            REDACTOR.register(customer_secret)
            REDACTOR.register(token)
        return cls(f"Basic {token}", "basic")

    @classmethod
    def token(cls, token: str) -> Credentials:
        token = token.strip()
        if not _HEADER_SAFE.fullmatch(token):
            bad = next((i for i, ch in enumerate(token) if not _HEADER_SAFE.fullmatch(ch)), 0)
            raise CredentialsError(
                f"AGORA_AUTH_TOKEN cannot be sent in an HTTP header: character {bad + 1} is a space, a control or a non-ASCII "
                "character; check how the variable was set"
            )
        REDACTOR.register(token)
        return cls(f"agora token={token}", "token")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """From the environment, each value stripped of surrounding whitespace (a value read from a
        file ends in a newline); a blank value counts as unset."""
        env = os.environ if env is None else env
        cid, secret, token = ((env.get(k) or "").strip() for k in ("AGORA_CUSTOMER_ID", "AGORA_CUSTOMER_SECRET", "AGORA_AUTH_TOKEN"))
        if cid and secret:
            return cls.basic(cid, secret)
        if cid or secret:
            missing = "AGORA_CUSTOMER_SECRET" if cid else "AGORA_CUSTOMER_ID"
            raise CredentialsError(f"{missing} is not set: Basic auth needs both AGORA_CUSTOMER_ID and AGORA_CUSTOMER_SECRET")
        if token:
            return cls.token(token)
        raise CredentialsError(f"no Agora credentials: set {ENV_VARS} (or use endpoint: local)")
