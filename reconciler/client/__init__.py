"""The Agora Conversational AI API client (the only package that imports `requests`).

Owns, by module: `endpoints` (endpoint resolution, credentials from the environment), `transport`
(the `requests` session, timeouts, the retry policy and budgets, `Retry-After`, request counting,
HTTP errors mapped to `ApiError`), `adapter` (`PooledAdapter`: requests' `HTTPAdapter` looking its
connection pool and CA bundle up once per origin), `operations` (`Client`: the typed phone-number and agent calls,
the agents.list page iterator). Import the names from here.
"""

from __future__ import annotations

from .endpoints import DEFAULT_BASE_URL, ENV_VARS, LOCAL_BASE_URL, REGIONS, SERVICE_PATH, Credentials, resolve_endpoint
from .operations import ALL_STATE_CODES, LIVE_STATE_CODES, Client
from .transport import DEFAULT_TIMEOUT, RetryPolicy, Transport, error_from_response, is_locked, parse_timeout

__all__ = [
    "ALL_STATE_CODES",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "ENV_VARS",
    "LIVE_STATE_CODES",
    "LOCAL_BASE_URL",
    "REGIONS",
    "SERVICE_PATH",
    "Client",
    "Credentials",
    "RetryPolicy",
    "Transport",
    "error_from_response",
    "is_locked",
    "parse_timeout",
    "resolve_endpoint",
]
