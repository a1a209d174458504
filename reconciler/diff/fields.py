"""Field-level comparison for the diff: resource "essences" (secrets as salted fingerprints) and the
`FieldChange`s between two essences, with sensitive values masked right here. Only essences that
differ are deep-diffed, with `deepdiff`: the only module that imports `deepdiff`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ..model import (
    AgentSpec,
    PhoneNumberSpec,
    child_path,
    is_secret_path,
    join_path,
    mask_secrets,
    secret_display,
)
from ..observed import (
    phone_secrets,
)
from ..plan import FieldChange
from ..secrets import SENSITIVE, fingerprint

MINTED = "(minted)"
TOKEN_PATH = "properties.token"

_MISSING = object()
_SCALARS = frozenset({str, int, float, bool, type(None)})


# --------------------------------------------------------------------------- essences
def fingerprint_secrets(value: Any, secrets: Mapping[str, str], salt: str, path: str = "") -> Any:
    """Replace every secret subtree by its salted fingerprint (what the ledger may hold)."""
    if not secrets and not path:  # only credential-named keys can be secret: no paths to build
        return _fingerprint_sensitive_keys(value, salt)
    if path and is_secret_path(path, secrets):
        return fingerprint(salt, value)
    kind = type(value)
    if kind in _SCALARS:  # most values: no ABC checks
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k: fingerprint_secrets(v, secrets, salt, child_path(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [fingerprint_secrets(v, secrets, salt, child_path(path, i)) for i, v in enumerate(value)]
    return value


def _fingerprint_sensitive_keys(value: Any, salt: str) -> Any:
    """`fingerprint_secrets` without declared secrets: a subtree is secret when its key names a
    credential (an ancestor's key was checked on the way down), so no path strings are built."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k: fingerprint(salt, v) if _sensitive_key(str(k)) else _fingerprint_sensitive_keys(v, salt) for k, v in value.items()}
    if isinstance(value, list):
        return [_fingerprint_sensitive_keys(v, salt) for v in value]
    return value


def has_sensitive_keys(value: Any) -> bool:
    """Whether any mapping key in `value` names a credential (`fingerprint_secrets` without declared
    secrets would then change something). Walks without building anything; a container other than
    a plain dict or list answers True (the caller then takes the general path)."""
    kind = type(value)
    if kind in _SCALARS:
        return False
    if kind is dict:
        if _keys_sensitive(tuple(value)):
            return True
        children: Any = value.values()
    elif kind is list:
        children = value
    else:
        return True
    for child in children:  # noqa: SIM110 - a loop, not any(generator): called for every number
        if type(child) not in _SCALARS and has_sensitive_keys(child):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _keys_sensitive(keys: tuple[Any, ...]) -> bool:
    """Whether one of a mapping's keys names a credential (the same few key sets recur for every resource)."""
    return any(_sensitive_key(str(k)) for k in keys)


@functools.lru_cache(maxsize=4096)
def _sensitive_key(key: str) -> bool:
    """Whether a key, read as a path below its parent (dots and `[i]` split as `child_path` would), names a credential."""
    return bool(key) and is_secret_path(key, _NO_SECRETS)


_NO_SECRETS: Mapping[str, str] = {}


def applied_agent_essence(spec: AgentSpec, salt: str) -> dict[str, Any]:
    result: dict[str, Any] = fingerprint_secrets(spec.essence(), spec.secrets, salt)
    return result


def applied_phone_essence(spec: PhoneNumberSpec, salt: str) -> dict[str, Any]:
    """Readable essence plus write-only values, secrets fingerprinted (for the ledger)."""
    write_only = spec.write_only()
    return _applied_phone(spec.essence(), write_only, phone_secrets(spec, write_only), salt)


def _applied_phone(essence: dict[str, Any], write_only: Mapping[str, Any], secrets: Mapping[str, str], salt: str) -> dict[str, Any]:
    result: dict[str, Any] = fingerprint_secrets(essence, secrets, salt)
    result["write_only"] = {path: fingerprint(salt, value) for path, value in sorted(write_only.items())}
    return result


# --------------------------------------------------------------------------- field diffs
def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return _MISSING
        elif not isinstance(doc, Mapping) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _field_path(parts: list[str | int], secrets: Mapping[str, str]) -> tuple[str | int, ...]:
    """Where a difference is reported: at the first secret path on the way down (list indices
    kept, so a secret inside a list element is reported alone, as a secret), else at the first
    list (lists are compared whole)."""
    for i in range(1, len(parts) + 1):
        if is_secret_path(join_path(parts[:i]), secrets):
            return tuple(parts[:i])
    for i, part in enumerate(parts):
        if isinstance(part, int):
            return tuple(parts[:i])
    return tuple(parts)


def _shown(value: Any, path: str, secrets: Mapping[str, str]) -> Any:
    if value is _MISSING:
        return None
    return mask_secrets(value, secrets, path)


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[FieldChange, ...]:
    """The differing fields of two essences (lists compared whole), secrets masked."""
    if before == after:
        return ()
    from deepdiff import DeepDiff  # imported on first use: in-sync plans never pay for it

    paths: set[tuple[str | int, ...]] = set()
    for items in DeepDiff(before, after, verbose_level=2).tree.values():
        for item in items:
            raw: list[str | int] = [p if isinstance(p, int) else str(p) for p in item.path(output_format="list")]
            paths.add(_field_path(raw, secrets))
    paths = {p for p in paths if not any(p[: len(q)] == q and p != q for q in paths)}
    out = []
    for parts in sorted(paths, key=lambda p: [(isinstance(x, int), x) for x in p]):
        dotted = join_path(parts)
        b, a = _get(before, parts), _get(after, parts)
        if is_secret_path(dotted, secrets):
            shown_after = secret_display(dotted, secrets) if a is not _MISSING else None
            out.append(FieldChange(dotted, SENSITIVE if b is not _MISSING else None, shown_after, sensitive=True, changed=True))
        else:
            out.append(FieldChange(dotted, _shown(b, dotted, secrets), _shown(a, dotted, secrets)))
    return tuple(out)


def created_fields(essence: Mapping[str, Any], secrets: Mapping[str, str], prefix: str = "") -> list[FieldChange]:
    out: list[FieldChange] = []
    for key in sorted(essence):
        value = essence[key]
        path = f"{prefix}.{key}" if prefix else key
        if value is None or key == "write_only":
            continue
        if is_secret_path(path, secrets):
            out.append(FieldChange(path, None, secret_display(path, secrets), sensitive=True, changed=True))
        elif isinstance(value, Mapping) and value:
            out.extend(created_fields(value, secrets, path))
        else:
            out.append(FieldChange(path, None, mask_secrets(value, secrets, path)))
    return out
