"""The `requests` transport under `Client`: one session per base URL, timeouts, the retry policy
(GET/PATCH/DELETE and `leave` only: exponential backoff with jitter, `Retry-After`, a bounded
budget; any method after a 409 `conflict`, which says nothing was written), wall-time budgets
(`bounded()`), request counting, and mapping HTTP errors to the `ApiError` subclasses of
`errors.py`. POSTs that create things are never re-sent unless the caller asks.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity

from .. import __version__
from ..errors import (
    ApiError,
    AuthError,
    BadRequestError,
    ConflictError,
    FatalTransportError,
    NotFoundError,
    RateLimitedError,
    ReconcilerError,
    RetryBudgetExhausted,
    ServerError,
    TransportError,
    UnprocessableError,
    clip,
)
from ..secrets import redact
from .adapter import PooledAdapter
from .endpoints import ENV_VARS, Credentials, refuse_userinfo

log = logging.getLogger("reconciler.client")

DEFAULT_TIMEOUT = (10.0, 30.0)  # connect, read (seconds): `--timeout`


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    budget_s: float = 60.0  # total time spent waiting between attempts
    max_retry_after: float = 60.0
    total_s: float | None = None  # wall time for one call, or one live read, retries included; None: 3 x read timeout


def parse_timeout(text: str) -> tuple[float, float]:
    """`--timeout`: `READ` (connect stays at most 10 s) or `CONNECT,READ`, in seconds."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(not (0 < v <= 3600) for v in values):
        raise ValueError(f"{text!r} is not a timeout: give READ or CONNECT,READ in seconds (0 < s <= 3600), e.g. 30 or 10,30")
    if len(values) == 1:
        return (min(DEFAULT_TIMEOUT[0], values[0]), values[0])
    return (values[0], values[1])


_STATUS_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def is_locked(error: ReconcilerError) -> bool:
    """409 `conflict` ("Concurrent modification conflict or resource locked"): nothing was written,
    so any method may be sent again after a pause. Not `phone_number_exists` nor `TaskConflict`."""
    return isinstance(error, ConflictError) and error.api_reason == "conflict"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _operation(path: str) -> str:
    """A short name for request counting: `phone-numbers`, `agents.list`, `join`, `leave`, ..."""
    parts = path.split("/")
    if "phone-numbers" in parts:
        return "phone-numbers"
    if parts[-1] == "agents":
        return "agents.list"
    if len(parts) >= 2 and parts[-2] == "agents":
        return "agents.get"
    return parts[-1]


def error_from_response(response: requests.Response, method: str, path: str) -> ApiError:
    """Map a non-2xx response to the `ApiError` subclass for its status, with a masked message."""
    status = response.status_code
    api_reason: str | None = None
    detail = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        api_reason = body.get("reason") or body.get("error_type")
        detail = str(body.get("detail") or body.get("description") or body.get("message") or "")
    elif response.text:
        detail = response.text
    detail = clip(redact(" ".join(detail.split())), 200)
    cls = _STATUS_ERRORS.get(status, ServerError if status >= 500 else ApiError)
    message = f"{method} {path}: HTTP {status}" + (f" {api_reason}" if api_reason else "") + (f": {detail}" if detail else "")
    if cls is AuthError:
        message += f" (check {ENV_VARS})"
    return cls(
        message,
        status=status,
        api_reason=api_reason,
        method=method,
        path=path,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


class _Headers(CaseInsensitiveDict[str]):
    """A call's headers. `copy()` copies the store at once instead of setting each header again:
    every call copies the session's headers, and urllib3 copies a call's headers once more."""

    def copy(self) -> _Headers:
        copied = _Headers.__new__(_Headers)
        copied._store = self._store.copy()  # type: ignore[attr-defined]  # requests' own store (not in its stubs)
        return copied


class Transport:
    """The HTTP core of `Client`: one session against one base URL. Thread-safe for concurrent calls."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        adapter: BaseAdapter | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        refuse_userinfo(urlsplit(self.base_url).netloc)
        self.credentials = credentials
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self._deadline: float | None = None  # shared by every call while `bounded()` is open
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": credentials.header, "User-Agent": f"agora-reconciler/{__version__}", "Accept": "application/json"}
        )
        origin = f"{urlsplit(self.base_url).scheme}://{urlsplit(self.base_url).netloc}/"
        self.session.mount(origin, adapter or PooledAdapter(pool_connections=4, pool_maxsize=max(pool_size, 4)))
        # requests re-reads proxy settings from the whole environment on every call (a third of
        # an apply's CPU); read them once here instead, honouring HTTPS_PROXY/NO_PROXY and CA bundles.
        self.session.proxies = self._proxies = dict(requests.utils.get_environ_proxies(self.base_url))
        self.session.verify = self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.session.trust_env = False
        # Each call is built from parts that are valid already (the base URL prepared once here, the
        # path's segments quoted by `operations`, headers checked once) and handed to the adapter
        # directly: `PreparedRequest.prepare` and `Session.send` cost more CPU than the HTTP
        # exchange itself. We never send cookies nor follow redirects, so nothing of theirs is lost.
        self._adapter = self.session.get_adapter(self.base_url + "/")
        self._prefix = self._prepared_prefix()
        self._headers = _Headers(self.session.headers)  # type: ignore[arg-type]
        self._count_lock = threading.Lock()
        self.requests_made: Counter[str] = Counter()
        self.responses: Counter[tuple[str, str]] = Counter()  # (operation, HTTP status or "error") -> count
        self._random = random.Random()

    def close(self) -> None:
        self.session.close()

    def _prepared_prefix(self) -> str | None:
        """The base URL as `PreparedRequest.prepare` writes it (IDNA host, quoting), ending in `/`;
        None when a header cannot be sent as is: then every call goes the long way, which refuses
        it with `InvalidHeader` (never retried) as before."""
        try:
            for header in self.session.headers.items():
                check_header_validity(header)  # type: ignore[type-var]
            probe = requests.PreparedRequest()
            probe.prepare_url(self.base_url + "/", None)
        except requests.RequestException:
            return None
        return probe.url

    @property
    def budget_s(self) -> float:
        """Wall time one call (or one `bounded()` block) may take, retries included."""
        return self.retry.total_s if self.retry.total_s is not None else 3 * self.timeout[1]

    @contextlib.contextmanager
    def bounded(self) -> Iterator[None]:
        """Every call inside shares one deadline (`budget_s` from now): bounds a whole live read."""
        previous = self._deadline
        self._deadline = self.clock() + self.budget_s
        try:
            yield
        finally:
            self._deadline = previous

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def request_count(self) -> int:
        with self._count_lock:
            return sum(self.requests_made.values())

    @property
    def mutating_count(self) -> int:
        with self._count_lock:
            return sum(n for key, n in self.requests_made.items() if not key.startswith("GET "))

    # ----------------------------------------------------------------- transport
    def _prepare(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any) -> requests.PreparedRequest:
        """The request as `PreparedRequest.prepare` would build it (same URL, headers and JSON body)."""
        if params is None and self._prefix is not None:
            try:
                data = None if body is None else json.dumps(body, allow_nan=False).encode()
            except ValueError as exc:  # NaN or infinity: refused as `json=` refuses it
                raise requests.exceptions.InvalidJSONError(exc) from None
            prepared = requests.PreparedRequest()
            prepared.method = method
            prepared.url = self._prefix + path
            prepared.headers = headers = self._headers.copy()
            if data is not None:
                headers["Content-Length"] = str(len(data))
                headers["Content-Type"] = "application/json"
            elif method not in ("GET", "HEAD"):
                headers["Content-Length"] = "0"
            prepared.body = data
            return prepared
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=f"{self.base_url}/{path}", headers=self.session.headers, params=params, json=body)
        return prepared

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any, deadline: float) -> requests.Response:
        operation = _operation(path)
        with self._count_lock:
            self.requests_made[f"{method} {operation}"] += 1
        started = time.monotonic()
        remaining = max(0.001, deadline - self.clock())
        timeout = (min(self.timeout[0], remaining), min(self.timeout[1], remaining))
        try:
            prepared = self._prepare(method, path, params, body)
            response = self._adapter.send(prepared, stream=False, timeout=timeout, verify=self._verify, cert=None, proxies=self._proxies)
            response.content  # noqa: B018 - read it all here (the connection goes back to the pool), as Session.send does
        except requests.RequestException as exc:
            self._count_response(operation, "error")
            raise self._transport_error(method, path, exc, timeout) from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s /%s -> %s in %.0f ms", method, path, response.status_code, (time.monotonic() - started) * 1000)
        self._count_response(operation, str(response.status_code))
        return response

    def _count_response(self, operation: str, status: str) -> None:
        with self._count_lock:
            self.responses[(operation, status)] += 1

    def response_counts(self) -> dict[tuple[str, str], int]:
        """Answers so far by operation and status (`error` when none came): for metrics."""
        with self._count_lock:
            return dict(self.responses)

    def _transport_error(self, method: str, path: str, exc: requests.RequestException, timeout: tuple[float, float]) -> TransportError:
        where = f"{method} {self.base_url}/{path}"
        if isinstance(exc, requests.exceptions.SSLError):
            return FatalTransportError(f"{where}: TLS failed ({clip(redact(str(exc)), 160)}); check the endpoint and its certificate")
        if isinstance(exc, (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
            return FatalTransportError(f"{where}: the request cannot be sent ({clip(redact(str(exc)), 160)})")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            within = f"within {timeout[0]:g} s" if timeout[0] >= self.timeout[0] else f"before its {self.budget_s:g} s budget ran out"
            return TransportError(f"{where}: could not connect to {self.origin} {within}")
        if isinstance(exc, requests.exceptions.ReadTimeout):
            within = f"within {timeout[1]:g} s" if timeout[1] >= self.timeout[1] else f"before its {self.budget_s:g} s budget ran out"
            return TransportError(f"{where}: no answer from {self.origin} {within}")
        return TransportError(f"{where}: no answer from the API at {self.origin} ({type(exc).__name__}: {clip(redact(str(exc)), 160)})")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        retry: bool | None = None,
    ) -> Any:
        """Send one call; parse JSON on 2xx. `retry` defaults to True for GET, PATCH and DELETE.

        Bounded in wall time: every attempt's timeouts and every wait end by the call's deadline
        (`budget_s`, or the shared deadline of an open `bounded()` block, whichever is first)."""
        retryable = method in ("GET", "PATCH", "DELETE") if retry is None else retry
        attempts = self.retry.max_attempts
        started = self.clock()
        deadline = started + self.budget_s
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        waited = 0.0
        last: ReconcilerError | None = None
        attempt = 0
        for attempt in range(attempts):
            if self.clock() >= deadline:
                break
            try:
                response = self._send(method, path, params, body, deadline)
            except FatalTransportError:
                raise
            except TransportError as exc:
                last = exc
            else:
                if response.status_code < 400:
                    return self._parse(response)
                error = error_from_response(response, method, "/" + path)
                if not (error.status == 429 or error.status >= 500 or is_locked(error)):
                    raise error
                last = error
            if attempt + 1 >= attempts or not (retryable or is_locked(last)):
                break
            delay = self._delay(attempt, last)
            if waited + delay > self.retry.budget_s or self.clock() + delay >= deadline:
                break
            log.info("retrying %s /%s in %.1fs after: %s", method, path, delay, last)
            self.sleep(delay)
            waited += delay
        if last is None:
            raise TransportError(f"{method} {self.base_url}/{path}: no time left in the {self.budget_s:g} s budget to call {self.origin}")
        if not retryable or is_locked(last):
            raise last
        elapsed = self.clock() - started
        tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
        raise RetryBudgetExhausted(f"gave up after {tries} in {elapsed:.1f} s: {last}", last)

    def _delay(self, attempt: int, error: ReconcilerError) -> float:
        backoff = min(self.retry.max_delay, self.retry.base_delay * (2.0**attempt))
        backoff = backoff * (0.5 + self._random.random() / 2)  # jitter: 50-100 % of the step
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, (int, float)):
            return min(float(retry_after), self.retry.max_retry_after)
        return backoff

    @staticmethod
    def _parse(response: requests.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return json.loads(response.content)  # bytes: UTF-8/16/32 detected as `Response.json` does
        except ValueError:
            raise ServerError(
                f"the API answered HTTP {response.status_code} with a body that is not JSON", status=response.status_code
            ) from None
