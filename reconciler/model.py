"""The domain model: addresses, declared resources (`Desired`) and the live account (`Live`).

Frozen dataclasses only, no I/O. Declared resources keep, next to their values, where each value
came from (`locations`) and how a sensitive value is shown (`secrets`: path -> `${VAR}` or
`(sensitive)`). The "essence" helpers give the comparable form of a resource that `diff.py`
works on: defaults filled in, server-owned fields gone, write-only fields separated.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .secrets import is_sensitive_key, sip_password, slow_fingerprint, strip_sip_password


class Kind(str, Enum):
    PHONE_NUMBER = "phone_number"
    AGENT = "agent"


KIND_ORDER = {Kind.PHONE_NUMBER.value: 0, Kind.AGENT.value: 1}
LIVE_STATUSES = frozenset({"IDLE", "STARTING", "RUNNING", "RECOVERING"})  # IDLE: alive, no user in the channel
BINDING_PATHS = ("inbound_config.pipeline_id", "outbound_config.pipeline_id")
AGENT_UPDATABLE_PREFIXES = ("properties.token", "properties.llm.system_messages", "properties.llm.params", "properties.mllm.params")


@dataclass(frozen=True, order=True)
class Address:
    kind: str
    key: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.key}"

    @classmethod
    def parse(cls, text: str) -> Address:
        kind, sep, key = text.partition("/")
        if not sep or kind not in KIND_ORDER or not key:
            raise ValueError(f"{text!r} is not an address like phone_number/+14155550100 or agent/NAME")
        return cls(kind, key)

    def sort_key(self) -> tuple[int, str]:
        return (KIND_ORDER[self.kind], self.key)


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


UNKNOWN_LOCATION = Location("<unknown>", 1, 1)


def _memo_address(spec: Any, kind: str, key: str) -> Address:
    """A spec's address, worked out once (every plan and apply asks for it) and kept outside its
    fields (equality, `replace` and the dataclass machinery never see it)."""
    address: Address | None = spec.__dict__.get("_address")
    if address is None:
        address = spec.__dict__["_address"] = Address(kind, key)
    return address


@dataclass(frozen=True)
class PhoneNumberSpec:
    phone_number: str
    provider: str
    label: str
    inbound: bool = True
    outbound: bool = True
    inbound_config: Mapping[str, Any] = field(default_factory=dict)  # without pipeline_id
    outbound_config: Mapping[str, Any] = field(default_factory=dict)  # without pipeline_id
    inbound_pipeline_id: str | None = None
    outbound_pipeline_id: str | None = None
    protect: bool = False
    location: Location = UNKNOWN_LOCATION
    secrets: Mapping[str, str] = field(default_factory=dict)  # path (`a.b[0].c`) -> display text
    locations: Mapping[str, Location] = field(default_factory=dict, compare=False)

    @property
    def address(self) -> Address:
        return _memo_address(self, Kind.PHONE_NUMBER.value, self.phone_number)

    def import_body(self) -> dict[str, Any]:
        """The body of `POST phone-numbers` (bindings are PATCHed afterwards)."""
        return {
            "provider": self.provider,
            "phone_number": self.phone_number,
            "label": self.label,
            "inbound": self.inbound,
            "outbound": self.outbound,
            "inbound_config": dict(self.inbound_config),
            "outbound_config": dict(self.outbound_config),
        }

    def bindings(self) -> dict[str, Any]:
        return {
            "inbound_config": {"pipeline_id": self.inbound_pipeline_id},
            "outbound_config": {"pipeline_id": self.outbound_pipeline_id},
        }

    def essence(self) -> dict[str, Any]:
        """The readable essence: what `phone_numbers.list` can show back (`phone_essence` of the
        declared number, built without the intermediate document: every key is there)."""
        return {
            "provider": self.provider,
            "label": self.label,
            "inbound": bool(self.inbound),
            "outbound": bool(self.outbound),
            "inbound_config": _essence_config({**self.inbound_config, "pipeline_id": self.inbound_pipeline_id}, ()),
            "outbound_config": _essence_config({**self.outbound_config, "pipeline_id": self.outbound_pipeline_id}, _NO_PASSWORD),
        }

    def write_only(self) -> dict[str, Any]:
        """Values the API never returns (SIP passwords): compared by fingerprint via the ledger."""
        out: dict[str, Any] = {}
        if self.outbound_config.get("password") is not None:
            out["outbound_config.password"] = self.outbound_config["password"]
        address = self.outbound_config.get("address")
        if isinstance(address, str) and sip_password(address):
            out["outbound_config.address.password"] = sip_password(address)
        return out


def phone_essence(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a declared or live phone number to the comparable readable form."""
    return {
        "provider": obj.get("provider"),
        "label": obj.get("label"),
        "inbound": bool(obj.get("inbound", True)),
        "outbound": bool(obj.get("outbound", True)),
        "inbound_config": _essence_config(obj.get("inbound_config"), ()),
        "outbound_config": _essence_config(obj.get("outbound_config"), _NO_PASSWORD),
    }


_NO_PASSWORD = ("password",)  # write-only: never in an essence


def _essence_config(raw: Any, drop: tuple[str, ...]) -> dict[str, Any]:
    """A config's comparable form: no nulls, no `drop` key, sorted allowed addresses (none: absent),
    SIP address without its password, `pipeline_id` always present."""
    if type(raw) is not dict:
        raw = dict(raw or {})
    cfg = {k: v for k, v in raw.items() if v is not None and k not in drop}
    addresses = cfg.get("allowed_addresses")
    if isinstance(addresses, list):
        if addresses:
            cfg["allowed_addresses"] = sorted(str(a) for a in addresses)
        else:
            del cfg["allowed_addresses"]
    address = cfg.get("address")
    if isinstance(address, str):
        cfg["address"] = strip_sip_password(address)
    cfg["pipeline_id"] = raw.get("pipeline_id")
    return cfg


def live_phone_essence(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A `phone_numbers.list` item as an essence; bindings fall back to `associated_pipeline`."""
    inbound = dict(obj.get("inbound_config") or {})
    outbound = dict(obj.get("outbound_config") or {})
    if "pipeline_id" not in inbound and "pipeline_id" not in outbound:
        associated = obj.get("associated_pipeline") or {}
        inbound["pipeline_id"] = associated.get("pipeline_id")
    return phone_essence({**obj, "inbound_config": inbound, "outbound_config": outbound})


@dataclass(frozen=True)
class AgentSpec:
    name: str
    app_id: str
    properties: Mapping[str, Any]
    preset: str | None = None
    pipeline_id: str | None = None
    location: Location = UNKNOWN_LOCATION
    secrets: Mapping[str, str] = field(default_factory=dict)  # path (`a.b[0].c`) -> display text
    locations: Mapping[str, Location] = field(default_factory=dict, compare=False)

    @property
    def address(self) -> Address:
        return _memo_address(self, Kind.AGENT.value, self.name)

    @property
    def channel(self) -> str:
        return str(self.properties.get("channel", ""))

    def join_body(self, instance_name: str) -> dict[str, Any]:
        body: dict[str, Any] = {"name": instance_name, "properties": json.loads(json.dumps(self.properties))}
        if self.preset:
            body["preset"] = self.preset
        if self.pipeline_id:
            body["pipeline_id"] = self.pipeline_id
        return body

    def essence(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "preset": self.preset, "pipeline_id": self.pipeline_id, "properties": dict(self.properties)}

    def is_secret_path(self, path: str) -> bool:
        return is_secret_path(path, self.secrets)


def split_path(path: str) -> tuple[str | int, ...]:
    """`a.b[0][1].c` -> ("a", "b", 0, 1, "c"): the one path syntax of config, model, diff and render."""
    if "[" not in path:
        return tuple(path.split(".")) if path else ()
    return _split_indexed(path)


@functools.lru_cache(maxsize=8192)
def _split_indexed(path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for piece in path.split("."):
        name, *indexes = piece.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i.rstrip("]")) for i in indexes)
    return tuple(parts)


def join_path(parts: Iterable[str | int]) -> str:
    """The inverse of `split_path`: list indices as `[i]`, mapping keys joined by dots."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def child_path(path: str, key: str | int) -> str:
    """The path of a mapping key or list index below `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _prefixes(path: str) -> tuple[str, ...]:
    """Every ancestor path of `path` and itself, shortest first (`a`, `a.b`, `a.b[0]`, ...)."""
    return _path_facts(path)[1]


def is_secret_path(path: str, secrets: Mapping[str, str]) -> bool:
    """A path is secret if it or an ancestor came from `${VAR}` or has a credential key."""
    sensitive, prefixes = _path_facts(path)
    if sensitive:
        return True
    if not secrets:
        return False
    return any(prefix in secrets for prefix in prefixes)


@functools.lru_cache(maxsize=8192)
def _path_facts(path: str) -> tuple[bool, tuple[str, ...]]:
    """Whether a part of `path` names a credential, and its prefixes with list indices kept (the
    same few paths recur for every resource of a declaration, so this is worked out once per path)."""
    parts = split_path(path)
    sensitive = any(isinstance(part, str) and is_sensitive_key(part) for part in parts)
    return sensitive, tuple(join_path(parts[: i + 1]) for i in range(len(parts)))


def secret_display(path: str, secrets: Mapping[str, str]) -> str:
    """How a sensitive value at `path` is shown: its `${VAR}` template, else `(sensitive)`."""
    for prefix in reversed(_prefixes(path)):
        if prefix in secrets:
            return secrets[prefix]
    return "(sensitive)"


@dataclass(frozen=True)
class Settings:
    """`settings:` as written in the YAML (None = not set there)."""

    endpoint: str | None = None
    app_id: str | None = None
    state: str | None = None
    prune: bool | None = None
    allow_replace: bool | None = None
    parallelism: int | None = None
    max_delete_pct: float | None = None
    min_existing: int | None = None
    app_certificate: str | None = field(default=None, repr=False)  # sensitive: never shown
    token_ttl: int | None = None  # seconds


DEFAULT_TOKEN_TTL = 86_400
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> int | None:
    """`24h`, `90m`, `1h30m`, `20s` -> seconds; None when it is not such a duration."""
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def mints_token(spec: AgentSpec, settings: Settings) -> bool:
    """The tool mints this agent's token: none is declared and a certificate is set."""
    return "token" not in spec.properties and bool(settings.app_certificate)


def agent_uid(spec: AgentSpec) -> int | str:
    """The agent's RTC identity for its token: a number, or a string account with enable_string_uid."""
    uid = str(spec.properties.get("agent_rtc_uid", "0"))
    if spec.properties.get("enable_string_uid") or not uid.isdigit():
        return uid
    return int(uid)


def wants_rtm(spec: AgentSpec) -> bool:
    features = spec.properties.get("advanced_features")
    return isinstance(features, Mapping) and bool(features.get("enable_rtm"))


@dataclass(frozen=True)
class Desired:
    settings: Settings
    phone_numbers: tuple[PhoneNumberSpec, ...]
    agents: tuple[AgentSpec, ...]
    files: tuple[str, ...] = ()
    base_dir: str = "."
    source_digest: str = ""  # sha256 of the files as written: `${VAR}` templates, never their values

    def digest(self) -> str:
        """sha256 of the declaration, never of a secret value: the files' text when known (fast),
        else the essences with secrets replaced by how they are shown."""
        if self.source_digest:
            return self.source_digest
        doc = {
            "phone_numbers": [_masked(n.phone_number, n.essence(), n.secrets) | {"protect": n.protect} for n in self.phone_numbers],
            "agents": [_masked(a.name, a.essence(), a.secrets) for a in self.agents],
            "prune": bool(self.settings.prune),
        }
        return canonical_digest(doc)

    def secrets_digest(self, key: str) -> str:
        """A keyed slow digest of the values behind `${VAR}`s and write-only fields ("" when there
        are none): `digest()` sees only the `${VAR}` text, so this is what tells a changed secret."""
        values = _interpolated(self)
        return slow_fingerprint(key, values) if values else ""


def _interpolated(desired: Desired) -> list[Any]:
    """Every declared resource holding an interpolated or write-only value, with its values."""
    doc: list[Any] = [[n.phone_number, n.essence(), n.write_only()] for n in desired.phone_numbers if n.secrets or n.write_only()]
    doc += [[a.name, a.essence()] for a in desired.agents if a.secrets]
    return doc


def _masked(key: str, essence: dict[str, Any], secrets: Mapping[str, str]) -> dict[str, Any]:
    return {"key": key, "essence": mask_secrets(essence, secrets)}


def mask_secrets(value: Any, secrets: Mapping[str, str], path: str = "") -> Any:
    """Replace every secret leaf by its display text (for digests and rendering)."""
    if path and is_secret_path(path, secrets):
        return secret_display(path, secrets)
    return _mask_below(value, secrets, path)


def _mask_below(value: Any, secrets: Mapping[str, str], path: str) -> Any:
    """`mask_secrets` for a value whose own path is known not to be secret."""
    if isinstance(value, Mapping):
        out = {}
        for key, child in value.items():
            below = child_path(path, str(key))
            if is_sensitive_key(str(key)) or (secrets and below in secrets):
                out[key] = secret_display(below, secrets)
            else:
                out[key] = _mask_below(child, secrets, below) if isinstance(child, (Mapping, list)) else child
        return out
    if isinstance(value, list):
        masked = []
        for i, item in enumerate(value):
            below = child_path(path, i)
            masked.append(secrets[below] if secrets and below in secrets else _mask_below(item, secrets, below))
        return masked
    return value


def canonical_digest(doc: Any) -> str:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


@dataclass(frozen=True)
class LiveAgent:
    app_id: str
    agent_id: str
    status: str
    start_ts: int


@dataclass(frozen=True)
class AgentProbe:
    """What one GET said about a ledger agent missing from the sweep."""

    agent_id: str
    status: str  # STOPPED, FAILED, ... or GONE (404)
    message: str = ""


@dataclass(frozen=True)
class Live:
    phone_numbers: Mapping[str, Mapping[str, Any]]  # E.164 -> API object
    agents: Mapping[str, tuple[LiveAgent, ...]]  # app_id -> alive agents (IDLE/STARTING/RUNNING/RECOVERING)
    probes: Mapping[str, AgentProbe] = field(default_factory=dict)  # agent_id -> probe
    # ledger address of a pending start -> the alive agents that start may have created
    pending: Mapping[str, tuple[LiveAgent, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # how the API was read (query forms it refused)

    def agent_ids(self) -> set[str]:
        return {a.agent_id for agents in self.agents.values() for a in agents}

    def digest(self) -> str:
        doc = {
            "phone_numbers": [self.phone_numbers[k] for k in sorted(self.phone_numbers)],
            "agents": sorted((a.app_id, a.agent_id, a.status) for agents in self.agents.values() for a in agents),
            "probes": sorted((p.agent_id, p.status) for p in self.probes.values()),
            "pending": sorted((k, tuple(a.agent_id for a in v)) for k, v in self.pending.items()),
        }
        return canonical_digest(doc)
