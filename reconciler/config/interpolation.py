"""`${VAR}` interpolation of configuration values from the environment.

Owns the syntax (`${VAR}`, `${VAR:-default}`, `${VAR:?message}`, `$$` for a literal `$`), its error
messages, and marking the results sensitive: they are kept as their template (shown as `${VAR}`)
and registered with the redactor, except identifiers (`IDENTITY_KEYS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..secrets import REDACTOR

if TYPE_CHECKING:
    from .reader import Path_, _Document

IDENTITY_KEYS = {"phone_number", "name", "app_id"}  # identifiers: shown in addresses and kept in the ledger
_INTERPOLATION = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_DISPLAY = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[-?][^}]*)?\}")
_VAR_EXPR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)(.*))?$", re.DOTALL)


def interpolate(doc: _Document, env: Mapping[str, str], text: str, path: Path_) -> str:
    """`text` with `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and `$$` replaced from `env`.

    Problems are reported on `doc` at `path`; an interpolated value is recorded in `doc.secrets` as
    its template (shown as `${VAR}`) and, unless it is an identifier, registered with the redactor."""
    used = False

    def replace(match: re.Match[str]) -> str:
        nonlocal used
        if match.group(0) == "$$":
            return "$"
        expr = match.group(1)
        if expr is None:
            doc.error(path, "unterminated ${...}: close it with }, or write $$ for a literal $")
            return ""
        parsed = _VAR_EXPR.fullmatch(expr)
        if not parsed:
            doc.error(path, f"'${{{expr}}}' is not a valid interpolation: use ${{VAR}}, ${{VAR:-default}} or ${{VAR:?message}}")
            return ""
        name, op, arg = parsed.groups()
        used = True
        value = env.get(name)
        if op == ":-":
            return value if value else (arg or "")
        if op == ":?":
            if not value:
                doc.error(path, f"{name} is not set: {arg or 'a value is required'}")
                return ""
            return value
        if value is None:
            doc.error(path, f"environment variable {name} is not set (use ${{{name}:-default}} for an optional value)")
            return ""
        return value

    result = _INTERPOLATION.sub(replace, text)
    if used:
        doc.secrets[path] = _DISPLAY.sub(lambda m: "${" + m.group(1) + "}", text)
        if not (path and path[-1] in IDENTITY_KEYS):
            REDACTOR.register(result)
    return result
