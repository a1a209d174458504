"""YAML -> `Desired`: loading, interpolation, schema and semantic validation, with positions.

Owns everything about reading the declaration (DESIGN.md section 2):
- composes YAML to nodes (the C parser when available) and builds plain values itself, so every
  value keeps its `file:line:col`, duplicate keys are caught, and alias expansion is bounded;
- interpolates `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and `$$`, marking the results
  sensitive (they are shown as `${VAR}`);
- validates against `schemas/` (compiled once) and then the rules a schema cannot say;
- reports every problem of a run together, sorted, each with a position and a hint.
The only module that imports `yaml` and `jsonschema`.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml
import yaml.cyaml

from .errors import ConfigError, Diagnostic
from .model import AgentSpec, Desired, Location, PhoneNumberSpec, Settings
from .secrets import REDACTOR, is_sensitive_key, sip_password

DEFAULT_PATH = "agora.yaml"
MAX_ALIAS_EXPANSION = 10_000  # nodes reached through aliases; a "billion laughs" needs 10**9
MAX_DEPTH = 64
IDENTITY_KEYS = {"phone_number", "name", "app_id"}  # identifiers: shown in addresses and kept in the ledger
_INTERPOLATION = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_DISPLAY = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[-?][^}]*)?\}")
_VAR_EXPR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)(.*))?$", re.DOTALL)
_C_PARSER = getattr(yaml, "__with_libyaml__", False)
_CYAML: Any = yaml.cyaml

Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------- schemas
def schema_dir() -> Path:
    """`schemas/` inside an installed wheel, else next to the package in a source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if (candidate / "config.schema.json").is_file():
            return candidate
    raise FileNotFoundError("the JSON Schemas are missing from this installation")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((schema_dir() / f"{name}.schema.json").read_text())
    return doc


@functools.cache
def _validator(name: str) -> Any:
    """A jsonschema validator (imported on first use: valid documents only need the fast path)."""
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for other in ("config", "phone_number", "agent", "plan"):
        doc = load_schema(other)
        resource = Resource.from_contents(doc)
        resources.append((doc["$id"], resource))
        resources.append((f"{other}.schema.json", resource))
    registry: Registry[Any] = Registry().with_resources(resources)
    cls = jsonschema.validators.validator_for(load_schema(name))
    return cls(load_schema(name), registry=registry)  # type: ignore[no-any-return]


@functools.cache
def _fast_validator() -> Callable[[Any], Any]:
    """The config schema compiled to Python by fastjsonschema (17x faster at 10,000 numbers).

    Only a yes/no: when it says no, jsonschema finds every error with its path. A differential
    test keeps the two verdicts equal."""
    by_id = {load_schema(n)["$id"]: load_schema(n) for n in ("config", "phone_number", "agent")}
    validate: Callable[[Any], Any] = fastjsonschema.compile(load_schema("config"), handlers={"https": by_id.__getitem__})
    return validate


def fast_is_valid(document: Any) -> bool:
    try:
        _fast_validator()(document)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def validate_plan_document(doc: Any) -> list[str]:
    """Messages for a plan document that does not follow `plan.schema.json` (empty when valid)."""
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message[:200]}" for e in _validator("plan").iter_errors(doc)]


# --------------------------------------------------------------------------- YAML -> values
@dataclass
class _Document:
    """One file's values plus where each came from."""

    file: str
    value: Any
    text_digest: str = ""
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # value: (line, col), 1-based
    key_positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # mapping key: (line, col)
    plain: dict[Path_, str] = field(default_factory=dict)  # unquoted scalars that are not strings
    secrets: dict[Path_, str] = field(default_factory=dict)  # interpolated: path -> template
    diagnostics: list[Diagnostic] = field(default_factory=list)
    failed: set[Path_] = field(default_factory=set)  # values already reported (no cascades)

    def where(self, path: Path_) -> Location:
        for i in range(len(path), -1, -1):
            position = self.positions.get(path[:i])
            if position:
                return Location(self.file, *position)
        return Location(self.file, 1, 1)

    def key_where(self, path: Path_) -> Location | None:
        position = self.key_positions.get(path)
        return Location(self.file, *position) if position else None

    def error(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.failed.add(path)
        loc = (self.key_where(path) if key else None) or self.where(path)
        self.diagnostics.append(Diagnostic(loc.file, loc.line, loc.col, message, dotted(path)))


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_MERGE = object()  # the `<<` merge key
_SKIP = object()  # a key that was reported as an error: its value is read and dropped


@dataclass
class _Frame:
    """An open mapping or sequence while events are read."""

    value: dict[str, Any] | list[Any]
    path: Path_
    anchor: str | None
    start_count: int
    key: Any = None  # mappings: the pending key (None: a key is expected next)
    first_seen: dict[str, Location] = field(default_factory=dict)
    merged: dict[str, Any] = field(default_factory=dict)


class _Builder:
    """Builds plain values straight from parser events, recording positions (all 1-based).

    Working on events rather than composed nodes keeps the C parser's speed (node composition and
    tag resolution in Python cost 7x more); keys are always text, so only plain scalar *values* are
    resolved. Aliases are shared, never copied, and their expansion is counted and bounded.
    """

    _constructor = yaml.constructor.SafeConstructor()
    _resolver = yaml.resolver.Resolver()

    def __init__(self, doc: _Document, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.env = env
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.count = 0
        self.expanded = 0

    def loc(self, mark: Any) -> Location:
        return Location(self.doc.file, mark.line + 1, mark.column + 1)

    def run(self, parser: Any) -> Any:
        stack: list[_Frame] = []
        root: Any = None
        documents = 0
        scalar_event, mapping_start, sequence_start = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
        collection_end = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is scalar_event:
                if not stack:
                    root = self._scalar(event, ())
                    continue
                top = stack[-1]
                container = top.value
                if type(container) is dict:
                    key = top.key
                    if key is None:  # a key: text, never resolved
                        self._place(top, event.value, event, is_key_scalar=True)
                        if event.anchor:
                            self.anchors[event.anchor] = (event.value, 1)
                        continue
                    if key is not _MERGE and key is not _SKIP and not event.anchor:  # the hot path
                        container[key] = self._scalar(event, (*top.path, key))
                        top.key = None
                        continue
                value = self._scalar(event, self._child_path(stack))
                if event.anchor:
                    self.anchors[event.anchor] = (value, 1)
                self._place(top, value, event, is_key_scalar=False)
            elif kind is mapping_start or kind is sequence_start:
                path = self._child_path(stack)
                if len(path) > MAX_DEPTH:
                    raise _Abort(self.loc(event.start_mark), f"the document is nested more than {MAX_DEPTH} levels deep")
                if stack and type(stack[-1].value) is dict and stack[-1].key is None:
                    self.doc.error(stack[-1].path, "mapping keys must be plain strings")
                    path = (*stack[-1].path, "?")
                else:
                    mark = event.start_mark
                    self.doc.positions[path] = (mark.line + 1, mark.column + 1)
                self.count += 1
                if event.anchor:
                    self.open_anchors.add(event.anchor)
                stack.append(_Frame({} if kind is mapping_start else [], path, event.anchor, self.count))
            elif kind in collection_end:
                frame = stack.pop()
                if type(frame.value) is dict:
                    for key, merged in frame.merged.items():
                        frame.value.setdefault(key, merged)
                if frame.anchor:
                    self.open_anchors.discard(frame.anchor)
                    self.anchors[frame.anchor] = (frame.value, self.count - frame.start_count)
                if stack:
                    self._place(stack[-1], frame.value, event, is_key_scalar=False)
                else:
                    root = frame.value
            elif kind is yaml.AliasEvent:
                path = self._child_path(stack)
                value = self._alias(event)
                if stack:
                    self._place(stack[-1], value, event, is_key_scalar=False)
                else:
                    root = value
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Abort(self.loc(event.start_mark), "the file holds more than one YAML document (---); use one document per file")
            elif event is None or kind is yaml.StreamEndEvent:
                return root

    def _child_path(self, stack: list[_Frame]) -> Path_:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value))
        if top.key is None or top.key is _MERGE or top.key is _SKIP:
            return top.path
        return (*top.path, top.key)

    def _place(self, top: _Frame, value: Any, event: Any, *, is_key_scalar: bool) -> None:
        """Put a finished key or value into the open container `top`."""
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if top.key is None:
            if not is_key_scalar:
                top.key = _SKIP
                return
            if value == "<<" and not event.style:
                top.key = _MERGE
                return
            mark = event.start_mark
            key_loc = Location(self.doc.file, mark.line + 1, mark.column + 1)
            key_path = (*top.path, value)
            if value in top.first_seen:
                prev = top.first_seen[value]
                self.doc.diagnostics.append(
                    Diagnostic(
                        key_loc.file,
                        key_loc.line,
                        key_loc.col,
                        f"duplicate key '{value}' (first defined at line {prev.line}, column {prev.col})",
                        dotted(key_path),
                    )
                )
                top.key = _SKIP
                return
            top.first_seen[value] = key_loc
            self.doc.key_positions[key_path] = (key_loc.line, key_loc.col)
            top.key = value
            return
        if top.key is _MERGE:
            for source in value if isinstance(value, list) else [value]:
                if isinstance(source, dict):
                    for k, v in source.items():
                        top.merged.setdefault(k, v)
        elif top.key is not _SKIP:
            top.value[top.key] = value
        top.key = None

    def _alias(self, event: Any) -> Any:
        name = event.anchor
        if name in self.open_anchors:
            raise _Abort(self.loc(event.start_mark), "a recursive alias refers to itself; YAML anchors must not contain their own alias")
        if name not in self.anchors:
            raise _Abort(self.loc(event.start_mark), f"the alias *{name} has no anchor &{name} before it")
        value, size = self.anchors[name]
        self.expanded += size
        self.count += size  # an anchor around this alias grows by what it expands to
        if self.expanded > MAX_ALIAS_EXPANSION:
            raise _Abort(
                self.loc(event.start_mark),
                f"aliases expand to more than {MAX_ALIAS_EXPANSION} values; refusing a document that grows when expanded",
            )
        return value

    def _scalar(self, event: Any, path: Path_) -> Any:
        self.count += 1
        mark = event.start_mark
        self.doc.positions[path] = (mark.line + 1, mark.column + 1)
        tag = event.tag
        plain = not event.style
        if tag is None or tag == "!":
            if not plain:
                text: str = event.value
                return self.interpolate(text, path) if "$" in text else text
            tag = self._resolver.resolve(yaml.ScalarNode, event.value, (True, False))  # type: ignore[no-untyped-call]
        if tag == "tag:yaml.org,2002:str":
            return self.interpolate(event.value, path) if "$" in event.value else event.value
        construct = self._constructor.yaml_constructors.get(tag)
        if construct is None:
            raise _Abort(self.loc(event.start_mark), f"unsupported YAML tag {tag}")
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = construct(self._constructor, node)
        except Exception as exc:  # noqa: BLE001 - any constructor failure is a user error here
            raise _Abort(self.loc(event.start_mark), f"cannot read this value: {str(exc).splitlines()[0][:120]}") from None
        if plain and not isinstance(value, str):
            self.doc.plain[path] = event.value
        if isinstance(value, (datetime.date, datetime.datetime, bytes)):
            self.doc.error(path, f"'{event.value}' was read as a date or binary value; quote it to keep it as text: \"{event.value}\"")
            return str(event.value)
        if isinstance(value, float) and value != value:  # NaN
            return str(event.value)
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise _Abort(self.loc(event.start_mark), f"unsupported YAML value of type {type(value).__name__}")
        return value

    def interpolate(self, text: str, path: Path_) -> str:
        used = False

        def replace(match: re.Match[str]) -> str:
            nonlocal used
            if match.group(0) == "$$":
                return "$"
            expr = match.group(1)
            if expr is None:
                self.doc.error(path, "unterminated ${...}: close it with }, or write $$ for a literal $")
                return ""
            parsed = _VAR_EXPR.match(expr)
            if not parsed:
                self.doc.error(path, f"'${{{expr}}}' is not a valid interpolation: use ${{VAR}}, ${{VAR:-default}} or ${{VAR:?message}}")
                return ""
            name, op, arg = parsed.groups()
            used = True
            value = self.env.get(name)
            if op == ":-":
                return value if value else (arg or "")
            if op == ":?":
                if not value:
                    self.doc.error(path, f"{name} is not set: {arg or 'a value is required'}")
                    return ""
                return value
            if value is None:
                self.doc.error(path, f"environment variable {name} is not set (use ${{{name}:-default}} for an optional value)")
                return ""
            return value

        result = _INTERPOLATION.sub(replace, text)
        if used:
            self.doc.secrets[path] = _DISPLAY.sub(lambda m: "${" + m.group(1) + "}", text)
            if not (path and path[-1] in IDENTITY_KEYS):
                REDACTOR.register(result)
        return result


class _Abort(Exception):
    def __init__(self, location: Location, message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message


def _read_file(path: Path, env: Mapping[str, str]) -> _Document:
    name = str(path)
    doc = _Document(name, None)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        doc.diagnostics.append(Diagnostic(name, 1, 1, f"the file is not UTF-8 text (byte {exc.start})"))
        return doc
    except OSError as exc:
        doc.diagnostics.append(Diagnostic(name, 1, 1, f"cannot read the file: {exc.strerror}"))
        return doc
    doc = parse_text(text, name, env)
    doc.text_digest = hashlib.sha256(text.encode()).hexdigest()
    return doc


def parse_text(text: str, name: str, env: Mapping[str, str]) -> _Document:
    """Parse one YAML text into a `_Document` (values, positions, diagnostics). Never raises."""
    doc = _Document(name, None)
    builder = _Builder(doc, env)
    try:
        parser = _CYAML.CParser(text) if _C_PARSER else yaml.SafeLoader(text)
        doc.value = builder.run(parser)
    except _Abort as abort:
        doc.diagnostics.append(Diagnostic(abort.location.file, abort.location.line, abort.location.col, abort.message))
        doc.value = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        hint = " (a tab cannot indent YAML; use spaces)" if "\t" in problem or "tab" in problem else ""
        doc.diagnostics.append(Diagnostic(name, line, col, f"invalid YAML: {problem}{hint}"))
        return doc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        doc.diagnostics.append(
            Diagnostic(name, 1, 1, f"invalid YAML: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}")
        )
    return doc


def discover(paths: Iterable[str]) -> tuple[list[Path], list[Diagnostic]]:
    """Files named, or every *.yaml / *.yml in a named folder (sorted)."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                problems.append(Diagnostic(str(path), 1, 1, "the folder has no *.yaml or *.yml files"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            hint = " (pass a file or folder, or create agora.yaml)" if raw == DEFAULT_PATH else ""
            problems.append(Diagnostic(str(path), 1, 1, f"no such file or folder{hint}"))
    return files, problems


# --------------------------------------------------------------------------- schema errors
def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _is_sensitive_path(path: Path_, doc: _Document) -> bool:
    return any(isinstance(p, str) and is_sensitive_key(p) for p in path) or any(path[:i] in doc.secrets for i in range(len(path) + 1))


def _trap_hint(path: Path_, doc: _Document, value: Any) -> str:
    raw = doc.plain.get(path)
    if raw is None:
        return ""
    if _is_sensitive_path(path, doc):
        return "; quote the value to keep it as text"
    if isinstance(value, bool):
        kind = f"the boolean {str(value).lower()}"
    elif isinstance(value, int) and raw.startswith("+"):
        kind = f"the integer {value}"
    elif isinstance(value, int) and re.fullmatch(r"0[0-7]+", raw):
        kind = f"the octal number {value}"
    elif ":" in raw:
        kind = f"the sexagesimal number {value}"
    else:
        kind = f"the {'integer' if isinstance(value, int) else 'number'} {value}"
    return f'; YAML read the unquoted {raw} as {kind}: quote it, "{raw}"'


def _schema_diagnostics(doc: _Document) -> None:
    if fast_is_valid(doc.value):
        return
    for error in _validator("config").iter_errors(doc.value):
        _report(error, doc)


def _report(error: Any, doc: _Document) -> None:
    path: Path_ = tuple(error.absolute_path)
    if path in doc.failed and error.validator != "additionalProperties":
        return
    where = dotted(path) or "the document"
    kind: Any = error.validator
    expected: Any = error.validator_value
    value: Any = error.instance
    schema: Any = error.schema
    custom = schema.get("x-error") if isinstance(schema, dict) else None
    if kind == "additionalProperties":
        known = sorted((schema.get("properties") or {}).keys())
        for key in sorted(set(value) - set(known)):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed keys: {', '.join(known)}"
            doc.error((*path, key), f"unknown key '{key}' in {where}{hint}", key=True)
        return
    if kind == "required":
        for key in expected:
            if isinstance(value, dict) and key not in value:
                doc.error(path, f"{where} is missing the required key '{key}'")
        return
    if custom and not (kind == "type" and path in doc.plain):
        doc.error(path, f"{where} {custom}" if path else custom)
        return
    if kind == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join(
            "a mapping" if t == "object" else "a list" if t == "array" else f"a {t}" if t != "integer" else "an integer" for t in wanted
        )
        hint = _trap_hint(path, doc, value) if "string" in wanted else ""
        doc.error(path, f"{where} must be {names}, not {_json_type(value)}{hint}")
        return
    show = "" if _is_sensitive_path(path, doc) or not isinstance(value, (str, int, float)) else f" (got {value!r})"
    messages: dict[str, Callable[[], str]] = {
        "enum": lambda: f"must be one of {', '.join(map(str, expected))}{show}",
        "const": lambda: f"must be {expected!r}{show}",
        "pattern": lambda: f"does not match {expected}{show}",
        "minimum": lambda: f"must be at least {expected}",
        "maximum": lambda: f"must be at most {expected}",
        "minLength": lambda: "must not be empty" if expected == 1 else f"must be at least {expected} characters",
        "maxLength": lambda: f"must be at most {expected} characters",
        "minItems": lambda: f"must have at least {expected} item{'s' if expected != 1 else ''}",
        "uniqueItems": lambda: "has duplicate items",
    }
    render = messages.get(kind)
    text = render() if render else "does not match any allowed form"
    doc.error(path, f"{where} {text}")


# --------------------------------------------------------------------------- semantic checks
def _check_semantics(
    docs: list[_Document], settings: dict[str, Any], settings_docs: dict[str, _Document], warnings: list[Diagnostic]
) -> None:
    numbers: dict[str, tuple[_Document, Path_]] = {}
    agents: dict[str, tuple[_Document, Path_]] = {}
    uids: dict[tuple[str, str, str], tuple[_Document, Path_]] = {}
    default_app = settings.get("app_id")
    for doc in docs:
        value = doc.value if isinstance(doc.value, dict) else {}
        for i, item in enumerate(value.get("phone_numbers") or []):
            if not isinstance(item, dict):
                continue
            base: Path_ = ("phone_numbers", i)
            key = item.get("phone_number")
            if isinstance(key, str):
                _check_unique(numbers, key, doc, base, f"phone number {key}")
            inbound = item.get("inbound_config")
            for j, cidr in enumerate((inbound.get("allowed_addresses") if isinstance(inbound, dict) else None) or []):
                if isinstance(cidr, str):
                    try:
                        ipaddress.ip_network(cidr, strict=False)
                    except ValueError:
                        doc.error(
                            (*base, "inbound_config", "allowed_addresses", j),
                            f"'{cidr}' is not an IP address or CIDR block (e.g. 112.126.15.64/27)",
                        )
            outbound = item.get("outbound_config")
            _literal_secret_warnings(doc, (*base, "outbound_config"), outbound, warnings)
            address = outbound.get("address") if isinstance(outbound, dict) else None
            apath = (*base, "outbound_config", "address")
            if isinstance(address, str) and sip_password(address):
                REDACTOR.register(sip_password(address))
                if apath not in doc.secrets:
                    loc = doc.where(apath)
                    warnings.append(
                        Diagnostic(
                            loc.file,
                            loc.line,
                            loc.col,
                            f"{dotted(apath)} has a literal SIP password; use ${{VAR}} to keep it out of the file",
                            dotted(apath),
                            "warning",
                        )
                    )
        for i, item in enumerate(value.get("agents") or []):
            if not isinstance(item, dict):
                continue
            base = ("agents", i)
            name = item.get("name")
            if isinstance(name, str):
                _check_unique(agents, name, doc, base, f"agent '{name}'")
            app_id = item.get("app_id") or default_app
            if not app_id:
                doc.error(
                    base,
                    f"agent '{name}' has no app_id and settings.app_id is not set; add app_id: ${{AGORA_APP_ID}} to the agent or to settings",
                )
            props = item.get("properties")
            if not isinstance(props, dict):
                continue
            _literal_secret_warnings(doc, (*base, "properties"), props, warnings)
            channel, uid = props.get("channel"), props.get("agent_rtc_uid")
            if isinstance(channel, str) and isinstance(uid, str) and uid != "0" and app_id:
                key3 = (str(app_id), channel, uid)
                if key3 in uids:
                    other_doc, other_path = uids[key3]
                    doc.error(
                        (*base, "properties", "agent_rtc_uid"),
                        f"agent_rtc_uid {uid} in channel {channel} is already used by the agent at {other_doc.where(other_path)}; two agents cannot share a uid in one channel",
                    )
                else:
                    uids[key3] = (doc, (*base, "properties", "agent_rtc_uid"))
            idle = props.get("idle_timeout")
            if idle != 0:
                p = (*base, "properties", "idle_timeout") if "idle_timeout" in props else (*base, "properties")
                loc = doc.where(p) if "idle_timeout" in props else doc.key_where(p) or doc.where(p)
                shown = idle if idle is not None else "30 (the default)"
                warnings.append(
                    Diagnostic(
                        loc.file,
                        loc.line,
                        loc.col,
                        f"agent '{name}' has idle_timeout {shown}: it exits that long after users leave and will be restarted again and again; set idle_timeout: 0 for a long-running agent",
                        dotted(p),
                        "warning",
                    )
                )
    if settings.get("prune") is True and not numbers:
        doc = settings_docs["prune"]
        loc = doc.key_where(("settings", "prune")) or doc.where(("settings", "prune"))
        warnings.append(
            Diagnostic(
                loc.file,
                loc.line,
                loc.col,
                "prune: true with no phone numbers declared: apply would delete every live number (the safety gate asks for --force)",
                "settings.prune",
                "warning",
            )
        )


def _check_unique(seen: dict[str, tuple[_Document, Path_]], key: str, doc: _Document, path: Path_, what: str) -> None:
    if key in seen:
        other_doc, other_path = seen[key]
        doc.error(path, f"{what} is declared twice: here and at {other_doc.where(other_path)}")
    else:
        seen[key] = (doc, path)


def _literal_secret_warnings(doc: _Document, path: Path_, value: Any, warnings: list[Diagnostic]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = (*path, key)
            if is_sensitive_key(key) and child_path not in doc.secrets and _has_literal(child, doc, child_path):
                REDACTOR.register(child)
                loc = doc.where(child_path)
                warnings.append(
                    Diagnostic(
                        loc.file,
                        loc.line,
                        loc.col,
                        f"{dotted(child_path)} is a literal secret in the file; use ${{VAR}} interpolation instead",
                        dotted(child_path),
                        "warning",
                    )
                )
            else:
                _literal_secret_warnings(doc, child_path, child, warnings)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _literal_secret_warnings(doc, (*path, i), child, warnings)


def _has_literal(value: Any, doc: _Document, path: Path_) -> bool:
    if isinstance(value, str):
        return bool(value) and path not in doc.secrets
    if isinstance(value, dict):
        return any(_has_literal(v, doc, (*path, k)) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_literal(v, doc, (*path, i)) for i, v in enumerate(value))
    return False


# --------------------------------------------------------------------------- building Desired
class _ValueLocations(Mapping[str, Location]):
    """The positions of one resource's values, by dotted path relative to it; built on demand."""

    def __init__(self, doc: _Document, base: Path_) -> None:
        self._doc = doc
        self._base = base

    @staticmethod
    def _parse(dotted_path: str) -> Path_:
        parts: list[str | int] = []
        for piece in dotted_path.split("."):
            name, *indexes = piece.split("[")
            if name:
                parts.append(name)
            parts.extend(int(i.rstrip("]")) for i in indexes)
        return tuple(parts)

    def __getitem__(self, key: str) -> Location:
        position = self._doc.positions.get((*self._base, *self._parse(key)))
        if position is None:
            raise KeyError(key)
        return Location(self._doc.file, *position)

    def _keys(self) -> list[str]:
        n = len(self._base)
        return [dotted(p[n:]) for p in self._doc.positions if len(p) > n and p[:n] == self._base]

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
    inbound = dict(item.get("inbound_config") or {})
    outbound = dict(item.get("outbound_config") or {})
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
    env = os.environ if env is None else env
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


def dump_document(doc: Any) -> str:
    """A configuration document as YAML (quoting E.164 numbers and other trap values)."""
    header = "# yaml-language-server: $schema=https://agora-reconciler.dev/schemas/config.schema.json\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
