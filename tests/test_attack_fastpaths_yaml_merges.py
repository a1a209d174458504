"""Attack on the YAML reader's fast paths (implicit tags of plain scalars remembered per read, an open
container's merge table made only for a `<<` key): generated documents of anchored mappings,
aliases, merges of one mapping or of a list (overlapping keys, explicit keys before and after the
merge, several `<<` keys, merges of merging mappings) and YAML 1.1 implicit scalars (each read as
PyYAML's safe loader reads it) read as YAML's merge rules say, with the same types, in the fast
read and the read with positions."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config.reader import parse_text

SCALARS = ["yes", "No", "on", "~", "null", "1", "-1", "0x1F", "0o17", "012", "1_000", "1.5", "-.5", ".inf", "-.Inf", "1:20", "tls"]
SCALARS += ["sip.example.com", "::1", "'0x1F'", '"yes"', '"S\\u00e4l\\u00e9s \\"q\\""', "true", "3.0", "1e3", "190:20:30", "0b101"]
KEYS = ["a", "b", "c", "yes_key", "x"]


def _scalar(text: str) -> Any:
    return yaml.safe_load(f"v: {text}\n")["v"]


@st.composite
def documents(draw: Any) -> tuple[str, dict[str, Any]]:
    """A document and the value YAML's merge rules give it (explicit keys win over merged ones;
    among merged mappings the first listed wins). PyYAML is no reference for merges: it gives
    another source's value when an anchored mapping is also reached through an alias elsewhere."""
    lines: list[str] = []
    expected: dict[str, Any] = {}
    anchors: list[str] = []
    for i in range(draw(st.integers(1, 4))):
        name = f"m{i}"
        lines.append(f"{name}: &{name}")
        value: dict[str, Any] = {}
        if anchors and draw(st.booleans()):
            source = draw(st.sampled_from(anchors))
            lines.append(f"  <<: *{source}")
            value.update(expected[source])
        own: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)):
            if anchors and draw(st.integers(0, 4)) == 0:
                alias = draw(st.sampled_from(anchors))
                lines.append(f"  {key}: *{alias}")
                own[key] = expected[alias]
            else:
                text = draw(st.sampled_from(SCALARS))
                lines.append(f"  {key}: {text}")
                own[key] = _scalar(text)
        expected[name] = {**value, **own}
        anchors.append(name)
    for j in range(draw(st.integers(1, 4))):
        lines.append(f"c{j}:")
        explicit = draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True))
        before = draw(st.integers(0, len(explicit)))
        own = {}
        for key in explicit[:before]:
            text = draw(st.sampled_from(SCALARS))
            lines.append(f"  {key}: {text}")
            own[key] = _scalar(text)
        merged: dict[str, Any] = {}
        for _ in range(draw(st.integers(1, 2))):  # a second `<<` key: its sources come after the first's
            sources = draw(st.lists(st.sampled_from(anchors), min_size=1, max_size=3))
            lines.append(f"  <<: *{sources[0]}" if len(sources) == 1 else "  <<: [" + ", ".join(f"*{s}" for s in sources) + "]")
            for source in sources:
                for key, item in expected[source].items():
                    merged.setdefault(key, item)
        for key in explicit[before:]:
            text = draw(st.sampled_from(SCALARS))
            lines.append(f"  {key}: {text}")
            own[key] = _scalar(text)
        expected[f"c{j}"] = {**merged, **own}
    return "\n".join(lines) + "\n", expected


def _typed(value: Any) -> Any:
    """A value with every scalar's type kept (`==` takes 1 for True and 1.0 for 1)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, repr(value))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(documents())
def test_anchors_and_merges_read_as_yaml_merges_them(case: tuple[str, dict[str, Any]]) -> None:
    text, value = case
    expected = _typed(value)
    for full in (False, True):
        doc = parse_text(text, "x.yaml", {}, full=full)
        assert not doc.diagnostics, (text, doc.diagnostics)
        assert _typed(doc.value) == expected, text
