"""`PooledAdapter`: requests' `HTTPAdapter` minus the work it repeats on every call to one origin.

For each request, `HTTPAdapter` parses the URL three times to find the connection pool and the
proxy, and checks the CA bundle on disk (a `stat`, two for https: system calls that also let
other threads take the interpreter). A `Transport` sends every call to one origin with settings
fixed when it is built, so this adapter keeps the last pool it was given for an (origin, verify,
cert) and sets a pool's certificate options once. Anything else (a proxy, another origin, other
settings) goes through `HTTPAdapter` unchanged: its exception mapping, retries and TLS handling are
all still requests' own.

Every answer becomes a `Response` as `HTTPAdapter.build_response` makes it, minus the cookie jar
filled from `Set-Cookie`: the tool never sends cookies (calls do not go through `Session.send`, the
only reader of that jar), and extracting them cost a tenth of a call's CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers


def _origin(url: str) -> str:
    """`scheme://host:port` of an absolute URL (the whole URL when it has no path)."""
    start = url.find("://")
    end = url.find("/", start + 3) if start >= 0 else -1
    return url if end < 0 else url[:end]


class PooledAdapter(HTTPAdapter):
    """An `HTTPAdapter` that looks a connection pool up once per origin and TLS settings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: tuple[tuple[str, Any, Any], Any] | None = None  # ((origin, verify, cert), pool)
        self._checked: tuple[Any, bool, Any, Any] | None = None  # (pool, https, verify, cert) set on that pool

    def get_connection_with_tls_context(
        self, request: PreparedRequest, verify: Any, proxies: Mapping[str, str] | None = None, cert: Any = None
    ) -> Any:
        if proxies:  # which proxy, if any, depends on the URL: requests decides each time
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        key = (_origin(request.url or ""), verify, cert)
        cached = self._pool
        if cached is not None and cached[0] == key:
            return cached[1]
        # the pool manager keeps its most recently used pools open, so the last one stays valid
        pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        self._pool = (key, pool)
        return pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Set a pool's certificate options (and check the CA bundle exists) once, not per call."""
        key = (conn, url[:6].lower() == "https:", verify, cert)
        if self._checked == key:
            return
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        self._checked = key

    def request_url(self, request: PreparedRequest, proxies: Mapping[str, str] | None) -> str:
        if proxies:
            return super().request_url(request, proxies)
        url = request.path_url
        return f"/{url.lstrip('/')}" if url.startswith("//") else url

    def build_response(self, req: PreparedRequest, resp: Any) -> Response:
        """`HTTPAdapter.build_response` without filling `response.cookies` from `Set-Cookie`."""
        merged = getattr(getattr(resp, "headers", None), "itermerged", None)
        if merged is None:  # not a urllib3 response: requests' own way
            return super().build_response(req, resp)
        response = Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(merged())  # a repeated field joined with ", ", as requests does
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else req.url  # type: ignore[assignment]
        response.request = req
        response.connection = self
        return response
