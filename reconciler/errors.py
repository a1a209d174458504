"""The exception tree of agora-reconciler. Every error the tool raises on purpose is one of these.

Imports nothing of ours, so every layer can raise and catch them::

    ReconcilerError                      reason
    ├── ConfigError                      config      bad YAML, schema or semantic errors (all of them)
    ├── CredentialsError                 auth        no credential in the environment
    ├── TokenError                       config      a token cannot be minted or parsed
    ├── ApiError                         api         the API answered with an error status
    │   ├── BadRequestError (400)
    │   ├── AuthError (401, 403)         auth
    │   ├── NotFoundError (404)
    │   ├── ConflictError (409)
    │   ├── UnprocessableError (422)
    │   ├── RateLimitedError (429)
    │   └── ServerError (5xx)
    ├── TransportError                   api         no answer: connection refused, reset, timeout
    │   └── FatalTransportError          api         TLS failure, invalid header: never retried
    ├── RetryBudgetExhausted             api         retried until the budget ran out
    ├── LiveReadError                    api         the live account could not be read completely
    ├── LedgerError                      ledger      the ledger file is unreadable or cannot be written
    │   ├── LockedError                  locked      another run holds the ledger lock
    │   └── LedgerConflictError          ledger      the ledger serial moved under us
    ├── PlanFileError                    config      a saved plan file is unreadable
    ├── StalePlanError                   stale_plan  the saved plan no longer matches the account
    ├── UnsafePlanError                  unsafe_plan safety thresholds, protect, replace not allowed
    ├── SelectionError                   config      a --target/--exclude pattern matches no resource
    ├── ApprovalError                    config      apply needs --auto-approve or a "yes"
    ├── PartialApplyError                partial_apply  some changes failed
    └── InterruptedApply                 interrupted Ctrl-C or SIGTERM during apply

`reason` is the machine-readable kind used in JSON error output (DESIGN.md section 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


def clip(text: str, limit: int = 200) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis: never mid-word
    (a single word longer than the limit is cut at the limit)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    if cut < limit // 2:
        cut = limit - 1
    return text[:cut].rstrip(" ,;:") + "…"


class ReconcilerError(Exception):
    """Root of every error the tool raises on purpose."""

    reason: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a configuration file, with its 1-based position."""

    file: str
    line: int
    col: int
    message: str
    path: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.col, self.message)


class ConfigError(ReconcilerError):
    """The configuration is invalid. Carries every diagnostic of the run, not only the first."""

    reason = "config"

    def __init__(self, diagnostics: list[Diagnostic] | str, warnings: list[Diagnostic] | None = None) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic("<config>", 1, 1, diagnostics)]
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.warnings = sorted(warnings or [], key=Diagnostic.sort_key)
        count = len(self.diagnostics)
        head = f"{count} error{'s' if count != 1 else ''} in the configuration"
        super().__init__(head + ":\n" + "\n".join(f"  {d}" for d in self.diagnostics))


class CredentialsError(ReconcilerError):
    reason = "auth"


class TokenError(ReconcilerError):
    """An AccessToken2 cannot be minted (bad app id, certificate, uid or TTL) or parsed."""

    reason = "config"


class ApiError(ReconcilerError):
    """The API answered with a non-2xx status. `api_reason` is its `reason`/`error_type`."""

    reason = "api"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        api_reason: str | None = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.api_reason = api_reason
        self.method = method
        self.path = path
        self.retry_after = retry_after


class BadRequestError(ApiError):
    pass


class AuthError(ApiError):
    reason = "auth"


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    pass


class UnprocessableError(ApiError):
    pass


class RateLimitedError(ApiError):
    pass


class ServerError(ApiError):
    pass


class TransportError(ReconcilerError):
    """No HTTP answer at all (connection refused or reset, timeout, dropped response)."""

    reason = "api"


class FatalTransportError(TransportError):
    """The request cannot succeed by retrying it (TLS certificate failure, invalid header)."""


class RetryBudgetExhausted(ReconcilerError):
    reason = "api"

    def __init__(self, message: str, last: ReconcilerError) -> None:
        super().__init__(message)
        self.last = last


class LiveReadError(ReconcilerError):
    reason = "api"


class LedgerError(ReconcilerError):
    reason = "ledger"

    dump: str | None = None  # the ledger as JSON when it could not be saved anywhere else


class LockedError(LedgerError):
    reason = "locked"


class LedgerConflictError(LedgerError):
    pass


class PlanFileError(ReconcilerError):
    reason = "config"


class StalePlanError(ReconcilerError):
    reason = "stale_plan"


class UnsafePlanError(ReconcilerError):
    reason = "unsafe_plan"


class SelectionError(ReconcilerError):
    """A `--target`/`--exclude` pattern that matches no resource."""

    reason = "config"


class ApprovalError(ReconcilerError):
    reason = "config"


class PartialApplyError(ReconcilerError):
    reason = "partial_apply"

    def __init__(self, message: str, failures: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.failures = failures


class InterruptedApply(ReconcilerError):
    reason = "interrupted"

    exit_code: int = 130  # 128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM
