"""Checked documents -> `Desired`: the entry points `check`, `load` and `parse_document`.

Owns the order of a run (discover, read, schema, settings merged across files, semantics), sorting
every problem of a run together, and building the specs with their secrets' templates and the
positions of their values (`_ValueLocations`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Diagnostic
from ..memory import acyclic
from ..model import AgentSpec, Desired, Location, PhoneNumberSpec, Settings, parse_duration, split_path
from .discovery import discover
from .reader import DEFAULT_PATH, Path_, _Document, _read_file, dotted, parse_text
from .schema import _json_type, _schema_diagnostics
from .semantics import _check_semantics


class _ValueLocations(Mapping[str, Location]):
    """The positions of one resource's values, by dotted path relative to it; built on demand."""

    def __init__(self, doc: _Document, base: Path_) -> None:
        self._doc = doc
        self._base = base

    @staticmethod
    def _parse(dotted_path: str) -> Path_:
        return split_path(dotted_path)

    def __getitem__(self, key: str) -> Location:
        position = self._doc.full().positions.get((*self._base, *self._parse(key)))
        if position is None:
            raise KeyError(key)
        return Location(self._doc.file, *position)

    def _keys(self) -> list[str]:
        n = len(self._base)
        return [dotted(p[n:]) for p in self._doc.full().positions if len(p) > n and p[:n] == self._base]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


def _by_resource(doc: _Document) -> dict[Path_, dict[str, str]]:
    """Interpolated values of every resource, keyed by its base path, relative to it (one pass)."""
    out: dict[Path_, dict[str, str]] = {}
    for path, template in doc.secrets.items():
        if len(path) > 2 and path[0] in ("phone_numbers", "agents"):
            out.setdefault(path[:2], {})[dotted(path[2:])] = template
    return out


def _phone_spec(doc: _Document, base: Path_, item: dict[str, Any], secrets: dict[str, str]) -> PhoneNumberSpec:
    inbound = item.get("inbound_config") or {}  # read only: the spec gets its own copies
    outbound = item.get("outbound_config") or {}
    return PhoneNumberSpec(
        phone_number=item["phone_number"],
        provider=item["provider"],
        label=item["label"],
        inbound=item.get("inbound", True),
        outbound=item.get("outbound", True),
        inbound_config={k: v for k, v in inbound.items() if k != "pipeline_id"},
        outbound_config={k: v for k, v in outbound.items() if k != "pipeline_id"},
        inbound_pipeline_id=inbound.get("pipeline_id"),
        outbound_pipeline_id=outbound.get("pipeline_id"),
        protect=bool(item.get("protect", False)),
        location=doc.where(base),
        secrets=secrets,
        locations=_ValueLocations(doc, base),
    )


def _agent_spec(doc: _Document, base: Path_, item: dict[str, Any], default_app: str | None, secrets: dict[str, str]) -> AgentSpec:
    secrets = dict(secrets)
    if "app_id" not in item and default_app and ("settings", "app_id") in doc.secrets:
        secrets["app_id"] = doc.secrets[("settings", "app_id")]
    return AgentSpec(
        name=item["name"],
        app_id=item.get("app_id") or default_app or "",
        properties=item["properties"],
        preset=item.get("preset"),
        pipeline_id=item.get("pipeline_id"),
        location=doc.where(base),
        secrets=secrets,
        locations=_ValueLocations(doc, base),
    )


@dataclass(frozen=True)
class LoadResult:
    desired: Desired | None
    errors: list[Diagnostic]
    warnings: list[Diagnostic]


def check(paths: Iterable[str] | None = None, env: Mapping[str, str] | None = None) -> LoadResult:
    """Load and validate; never raises for user errors (see `load` for the raising form)."""
    with acyclic():  # the values built here hold no reference cycles
        return _check(paths, os.environ if env is None else env)


def _check(paths: Iterable[str] | None, env: Mapping[str, str]) -> LoadResult:
    files, problems = discover(list(paths or []) or [DEFAULT_PATH])
    docs = [_read_file(f, env) for f in files]
    warnings: list[Diagnostic] = []
    settings: dict[str, Any] = {}
    settings_docs: dict[str, _Document] = {}
    for doc in docs:
        if doc.value is None:
            if not doc.diagnostics:
                warnings.append(Diagnostic(doc.file, 1, 1, "the file is empty: it declares nothing", "", "warning"))
            continue
        if not isinstance(doc.value, dict):
            doc.error((), f"the document must be a mapping with version, settings, phone_numbers and agents, not {_json_type(doc.value)}")
            continue
        _schema_diagnostics(doc)
        for key, value in (doc.value.get("settings") or {}).items() if isinstance(doc.value.get("settings"), dict) else []:
            if key in settings_docs:
                first = settings_docs[key]
                doc.error(
                    ("settings", key),
                    f"settings.{key} is declared twice: here and at {first.key_where(('settings', key)) or first.where(('settings', key))}",
                    key=True,
                )
                continue
            settings[key], settings_docs[key] = value, doc
    valid_docs = [d for d in docs if isinstance(d.value, dict)]
    _check_semantics(valid_docs, settings, settings_docs, warnings)
    errors = problems + [d for doc in docs for d in doc.diagnostics]
    errors.sort(key=Diagnostic.sort_key)
    warnings.sort(key=Diagnostic.sort_key)
    if errors:
        return LoadResult(None, errors, warnings)
    return LoadResult(_assemble(valid_docs, files, settings, settings_docs), [], warnings)


def _assemble(docs: list[_Document], files: list[Path], settings: dict[str, Any], settings_docs: dict[str, _Document]) -> Desired:
    default_app = settings.get("app_id")
    numbers = []
    agents = []
    for doc in docs:
        relative = _by_resource(doc)
        for i, item in enumerate(doc.value.get("phone_numbers") or []):
            base: Path_ = ("phone_numbers", i)
            numbers.append(_phone_spec(doc, base, item, relative.get(base, {})))
        for i, item in enumerate(doc.value.get("agents") or []):
            base = ("agents", i)
            agents.append(_agent_spec(doc, base, item, default_app, relative.get(base, {})))
    for doc in docs:  # after every spec is built: a settings value may come from any file
        doc.release()
    base_doc = settings_docs.get("state")
    base_dir = str(Path(base_doc.file).parent if base_doc else (files[0].parent if files else Path(".")))
    safety = settings.get("safety") or {}
    return Desired(
        settings=Settings(
            endpoint=settings.get("endpoint"),
            app_id=default_app,
            state=settings.get("state"),
            prune=settings.get("prune"),
            allow_replace=settings.get("allow_replace"),
            parallelism=settings.get("parallelism"),
            max_delete_pct=safety.get("max_delete_pct"),
            min_existing=safety.get("min_existing"),
            app_certificate=settings.get("app_certificate"),
            token_ttl=parse_duration(settings["token_ttl"]) if settings.get("token_ttl") else None,
        ),
        phone_numbers=tuple(numbers),
        agents=tuple(agents),
        files=tuple(str(f) for f in files),
        base_dir=base_dir,
        source_digest="sha256:" + hashlib.sha256("\n".join(f"{Path(d.file).name}:{d.text_digest}" for d in docs).encode()).hexdigest(),
    )


def load(paths: Iterable[str] | None = None, env: Mapping[str, str] | None = None) -> Desired:
    """Load and validate the declaration, raising `ConfigError` with every problem found."""
    result = check(paths, env)
    if result.errors or result.desired is None:
        raise ConfigError(result.errors, result.warnings)
    return result.desired


def parse_document(text: str, name: str = "<string>", env: Mapping[str, str] | None = None) -> Any:
    """Parse and validate one document held in memory (fuzzing, tests). Raises `ConfigError`."""
    doc = parse_text(text, name, {} if env is None else env)
    if doc.value is not None:
        if isinstance(doc.value, dict):
            _schema_diagnostics(doc)
        else:
            doc.error((), "the document must be a mapping")
    if doc.diagnostics:
        raise ConfigError(doc.diagnostics)
    return doc.value
