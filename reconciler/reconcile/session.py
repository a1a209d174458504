"""Options and sessions: option precedence (flag > environment > `settings:` > default), the
ledger backend an option set names, and the `Session` (declaration, client, backend, options,
clock, token minter) every use case runs in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config
from ..client import Client
from ..diff import DeclaredForms
from ..ledger import Backend, FileBackend, open_backend
from ..model import DEFAULT_TOKEN_TTL, Desired
from ..safety import SafetyPolicy

if TYPE_CHECKING:
    from ..tokens import Minter

DEFAULT_STATE = ".agora-reconciler/state.json"
DEFAULT_PARALLELISM = 8


@dataclass(frozen=True)
class Options:
    endpoint: str = ""  # as given: local, us, ..., a URL, or "" for Agora's default
    state: str = DEFAULT_STATE
    state_name: str = "default"  # the ledger's name in a PostgreSQL database
    parallelism: int = DEFAULT_PARALLELISM
    prune: bool = False
    allow_replace: bool = False
    force: bool = False
    lock_timeout: float = 0.0
    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    safety: SafetyPolicy = field(default_factory=SafetyPolicy)
    command: str = "agora-reconciler"


def resolve_options(desired: Desired | None, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Options:
    """flag > environment > `settings:` > default, for every option."""
    env = os.environ if env is None else env
    s = desired.settings if desired else None

    def pick(flag: str, env_var: str | None, setting: Any, default: Any) -> Any:
        if flags.get(flag) is not None:
            return flags[flag]
        if env_var and env.get(env_var):
            return env[env_var]
        return setting if setting is not None else default

    base = Path(desired.base_dir) if desired else Path(".")
    state_flag = pick("state", "AGORA_RECONCILER_STATE", None, None)
    if state_flag is not None:
        state = str(state_flag)
    else:
        state = str(s.state) if s and s.state else DEFAULT_STATE
        if "://" not in state and not Path(state).is_absolute():
            state = str(base / state)
    return Options(
        endpoint=str(pick("endpoint", "AGORA_ENDPOINT", s.endpoint if s else None, "") or ""),
        state=state,
        state_name=str(pick("state_name", "AGORA_RECONCILER_STATE_NAME", None, None) or default_state_name(base)),
        parallelism=int(pick("parallelism", None, s.parallelism if s else None, DEFAULT_PARALLELISM)),
        prune=bool(s.prune) if s and s.prune is not None else False,
        allow_replace=bool(flags.get("allow_replace") or (s.allow_replace if s else False)),
        force=bool(flags.get("force")),
        lock_timeout=float(flags.get("lock_timeout") or 0.0),
        targets=tuple(flags.get("targets") or ()),
        excludes=tuple(flags.get("excludes") or ()),
        safety=SafetyPolicy(
            max_delete_pct=float(s.max_delete_pct) if s and s.max_delete_pct is not None else 30.0,
            min_existing=int(s.min_existing) if s and s.min_existing is not None else 10,
        ),
        command=str(flags.get("command") or "agora-reconciler"),
    )


def default_state_name(config_dir: Path) -> str:
    """A PostgreSQL ledger's default name: the configuration folder's name (`--state-name` overrides)."""
    return config_dir.resolve().name or "default"


def backend_for(options: Options) -> Backend:
    """The ledger backend; every ledger it loads is checked against `ledger.schema.json` (a file
    ledger's snapshot bytes once: `config.ledger_checks` remembers those that passed)."""
    return open_backend(options.state, options.state_name, validate=config.ledger_checks)


@dataclass
class Session:
    desired: Desired
    client: Client
    backend: Backend
    options: Options
    clock: Callable[[], float] = time.time  # token issue times and renewals (the loop injects one)
    declared_forms: DeclaredForms | None = None  # kept between plans of this declaration (the loop sets one)

    def minter(self) -> Minter | None:
        """Mints tokens for agents that declare none, when `settings.app_certificate` is set."""
        from ..tokens import Minter

        s = self.desired.settings
        if not s.app_certificate:
            return None
        return Minter(s.app_certificate, s.token_ttl or DEFAULT_TOKEN_TTL, clock=self.clock)

    def keep_declared_forms(self) -> None:
        """Keep what the diff works out from the declaration for the next plans (a long-running loop),
        and a file ledger's decoded snapshot for the next loads of the same bytes."""
        self.declared_forms = DeclaredForms()
        if isinstance(self.backend, FileBackend):
            self.backend.keep_decoded = True

    @classmethod
    def open(cls, desired: Desired, client: Client, options: Options) -> Session:
        return cls(desired, client, backend_for(options), options)
