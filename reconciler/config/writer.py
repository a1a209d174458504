"""Writing a configuration document back as YAML (`dump_document`, used by `export`): the schema
modeline, header comments, trailing comments by value path, E.164 numbers and `${VAR}` quoted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

SCHEMA_MODELINE = "# yaml-language-server: $schema=agora.schema.json"
SCHEMA_HINT = "# (write the schema next to this file with: agora-reconciler schema > agora.schema.json)"
_E164 = re.compile(r"\+[0-9]{4,20}")


def _scalar(value: Any) -> str:
    """One YAML scalar or flow list; E.164 numbers and `${VAR}` templates double-quoted."""
    if isinstance(value, str) and (_E164.fullmatch(value) or "${" in value):
        return json.dumps(value, ensure_ascii=False)
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _emit(doc: Mapping[str, Any], path: tuple[str | int, ...], indent: int, lines: list[str], comments: Mapping[Any, str]) -> None:
    pad = " " * indent
    for key, value in doc.items():
        here = (*path, key)
        note = f"  # {comments[here]}" if here in comments else ""
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:{note}")
            _emit(value, here, indent + 2, lines, comments)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{key}:{note}")
            for index, item in enumerate(value):
                block: list[str] = []
                _emit(item, (*here, index), indent + 4, block, comments)
                if block:
                    block[0] = f"{pad}  - {block[0][indent + 4 :]}"
                lines.extend(block)
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}{note}")


def dump_document(doc: Mapping[str, Any], *, comments: Mapping[Any, str] | None = None, header: Iterable[str] = ()) -> str:
    """A configuration document as YAML with the schema modeline, optional header comment lines,
    and trailing comments by value path (`("phone_numbers", 0, "label")`). Numbers are quoted."""
    lines = [SCHEMA_MODELINE, SCHEMA_HINT, *(f"# {line}".rstrip() for line in header)]
    _emit(doc, (), 0, lines, comments or {})
    return "\n".join(lines) + "\n"
