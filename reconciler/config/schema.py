"""Validation against the JSON Schemas in `schemas/`, and the messages for what fails it.

Owns finding and loading the schemas (`schema_dir`, `load_schema`), the validators (jsonschema,
built once; fastjsonschema as the fast yes/no path for valid documents), plan- and
ledger-document validation, and turning each schema error into one diagnostic with a position and
a hint (unknown keys with a close match, YAML values read as numbers or booleans, ...).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import marshal
import os
import re
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
from fastjsonschema.ref_resolver import RefResolver

from ..errors import clip
from ..secrets import is_sensitive_key
from .reader import Path_, _Document, dotted


def schema_dir() -> Path:
    """`schemas/` inside an installed wheel, else next to the package in a source tree."""
    here = Path(__file__).resolve().parent.parent  # reconciler/
    for candidate in (here / "schemas", here.parent / "schemas"):
        if (candidate / "config.schema.json").is_file():
            return candidate
    raise FileNotFoundError("the JSON Schemas are missing from this installation")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((schema_dir() / f"{name}.schema.json").read_text())
    return doc


def schema_names() -> list[str]:
    """The schemas this installation ships (`config`, `phone_number`, `agent`, `plan`, ...)."""
    return sorted(p.name.removesuffix(".schema.json") for p in schema_dir().glob("*.schema.json"))


def bundled_schema(name: str) -> dict[str, Any]:
    """`name`'s schema with every schema it references embedded under `$defs` (refs rewritten to
    `#/$defs/<name>`), so editors and check-jsonschema need no other file and no network."""
    root = json.loads(json.dumps(load_schema(name)))
    defs: dict[str, Any] = {}

    def target(ref: str) -> str | None:
        match = re.fullmatch(r"(?:.*/)?([a-z_]+)\.schema\.json(#.*)?", ref)
        return match.group(1) if match and match.group(1) != name else None

    def rewrite(node: Any, owner: str | None) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v, owner) for k, v in node.items()}
            ref = node.get("$ref")
            if isinstance(ref, str):
                other = target(ref)
                if other is not None:
                    if other not in defs:
                        defs[other] = {}  # placeholder first: a cycle of references ends here
                        embedded = {k: v for k, v in load_schema(other).items() if k not in ("$id", "$schema")}
                        defs[other] = rewrite(json.loads(json.dumps(embedded)), other)
                    fragment = ref.partition("#")[2]
                    out["$ref"] = f"#/$defs/{other}{fragment}"
                elif owner is not None and ref.startswith("#/"):
                    out["$ref"] = f"#/$defs/{owner}{ref[1:]}"
            return out
        if isinstance(node, list):
            return [rewrite(v, owner) for v in node]
        return node

    bundled: dict[str, Any] = rewrite(root, None)
    if defs:
        bundled["$defs"] = {**bundled.get("$defs", {}), **defs}
    return bundled


_END_ANCHOR = re.compile(r"(?<!\\)\$$")


def _python_patterns(value: Any) -> Any:
    """The schema with every `pattern` ending in `$` made to end in `\\Z`: in a schema (ECMA-262)
    `$` is the end of the text, in Python it also matches before a final newline, which let
    `"+14155550100\\n"` or an agent name ending in a newline through."""
    if isinstance(value, dict):
        return {k: _END_ANCHOR.sub(r"\\Z", v) if k == "pattern" and isinstance(v, str) else _python_patterns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python_patterns(v) for v in value]
    return value


@functools.cache
def _validator(name: str) -> Any:
    """A jsonschema validator (imported on first use: valid documents only need the fast path)."""
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for other in ("config", "phone_number", "agent", "plan", "ledger"):
        doc = _python_patterns(load_schema(other))
        resource = Resource.from_contents(doc)
        resources.append((doc["$id"], resource))
        resources.append((f"{other}.schema.json", resource))
    registry: Registry[Any] = Registry().with_resources(resources)
    schema = _python_patterns(load_schema(name))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)  # type: ignore[no-any-return]


@functools.cache
def _fast_validator() -> Callable[[Any], Any]:
    """The config schema compiled to Python by fastjsonschema (17x faster at 10,000 numbers).

    Only a yes/no: when it says no, jsonschema finds every error with its path. A differential
    test keeps the two verdicts equal. The generated code is compiled once and its code object
    cached (`_cached_code`), so a process does not spend 80 ms compiling it again."""
    schemas = [load_schema(n) for n in ("config", "phone_number", "agent")]
    by_id = {doc["$id"]: doc for doc in schemas}
    handlers = {"https": by_id.__getitem__}
    key = hashlib.sha256(json.dumps([schemas, fastjsonschema.VERSION, sys.version], sort_keys=True).encode()).hexdigest()[:20]

    def generate() -> str:
        return fastjsonschema.compile_to_code(schemas[0], handlers=handlers)

    namespace: dict[str, Any] = {}
    exec(_cached_code(f"config-validator-{key}", generate), namespace)  # our own schema's generated code
    validate: Callable[[Any], Any] = namespace[RefResolver.from_schema(schemas[0], handlers=handlers, store={}).get_scope_name()]
    return validate


def _cached_code(name: str, generate: Callable[[], str]) -> types.CodeType:
    """The compiled code of `generate()`, kept as `<name>.marshal` in this package's __pycache__
    (as Python keeps its bytecode) or else the user's cache folder; compiled in memory if neither
    can be written. `name` carries a digest of every input, so a stale file is never read."""
    folders = [Path(__file__).resolve().parent / "__pycache__"]
    folders.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agora-reconciler")
    for folder in folders:
        try:
            loaded = marshal.loads((folder / f"{name}.marshal").read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            continue
        if isinstance(loaded, types.CodeType):
            return loaded
    code = compile(generate(), f"<{name}>", "exec")
    data = marshal.dumps(code)
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, folder / f"{name}.marshal")
            break
        except OSError:
            continue
    return code


def fast_is_valid(document: Any) -> bool:
    try:
        _fast_validator()(document)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def validate_plan_document(doc: Any) -> list[str]:
    """Messages for a plan document that does not follow `plan.schema.json` (empty when valid)."""
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {clip(e.message, 200)}" for e in _validator("plan").iter_errors(doc)]


@functools.cache
def _ledger_schema_key() -> str:
    """A digest of everything the ledger check depends on (the schema, fastjsonschema, Python)."""
    return hashlib.sha256(json.dumps([load_schema("ledger"), fastjsonschema.VERSION, sys.version], sort_keys=True).encode()).hexdigest()[
        :20
    ]


@functools.cache
def _fast_ledger_validator() -> Callable[[Any], Any]:
    """The ledger schema compiled to Python by fastjsonschema, its code cached as the config's is."""
    schema = load_schema("ledger")
    key = _ledger_schema_key()
    namespace: dict[str, Any] = {}
    exec(_cached_code(f"ledger-validator-{key}", lambda: fastjsonschema.compile_to_code(schema)), namespace)  # our own schema's code
    validate: Callable[[Any], Any] = namespace[RefResolver.from_schema(schema, store={}).get_scope_name()]
    return validate


MAX_LEDGER_PROBLEMS = 20


def validate_ledger_document(doc: Any) -> list[str]:
    """Messages for a ledger document that does not follow `ledger.schema.json`, each naming the
    entry (empty when valid). fastjsonschema says yes fast; jsonschema then finds every error."""
    try:
        _fast_ledger_validator()(doc)
        return []
    except fastjsonschema.JsonSchemaException:
        pass
    errors = sorted(_validator("ledger").iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [_ledger_message(e) for e in errors[:MAX_LEDGER_PROBLEMS]]


class LedgerChecks:
    """`validate_ledger_document`, remembering the digests of the last snapshot bytes that passed it
    (`ledger.RemembersChecks`) in the user's cache folder, under the check's own digest (another
    schema, fastjsonschema or Python starts afresh). Bytes that failed are never remembered. A
    missing or unwritable cache only means checking again."""

    KEPT = 32  # digests remembered (a few ledgers, each saved now and then)

    def __call__(self, doc: Any) -> list[str]:
        return validate_ledger_document(doc)

    def _path(self) -> Path:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agora-reconciler"
        return cache / f"ledger-checks-{_ledger_schema_key()}"

    def _known(self) -> list[str]:
        try:
            return self._path().read_text(encoding="ascii").split()
        except (OSError, ValueError):
            return []

    def passed(self, digest: bytes) -> bool:
        return digest.hex() in self._known()

    def record(self, digest: bytes) -> None:
        others = [d for d in self._known() if d != digest.hex()]
        known = [*others[-(self.KEPT - 1) :], digest.hex()]
        path = self._path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        except OSError:
            return
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write("\n".join(known) + "\n")
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


ledger_checks = LedgerChecks()


def _ledger_message(error: Any) -> str:
    path = [str(p) for p in error.absolute_path]
    custom = error.schema.get("x-error") if isinstance(error.schema, dict) else None
    if path[:1] == ["resources"] and len(path) >= 2:
        where = f"entry {path[1]!r}" + (f", field {'.'.join(path[2:])}" if len(path) > 2 else "")
    elif error.validator == "propertyNames" or custom:
        where = f"entry {error.instance!r}" if custom else "resources"
    else:
        where = "/".join(path) or "the document"
    message = str(custom) if custom else error.message
    return f"{where}: {message[:200]}"


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
