"""The YAML reader resolves plain scalars as PyYAML's safe loader does, whether or not it has seen
the same text before in the file (it remembers the implicit tags of the first few thousand), and
interpolates `${VAR}` in plain and quoted text alike."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config.reader import _TAGS_KEPT, parse_text

PLAIN = [
    "yes",
    "No",
    "on",
    "OFF",
    "true",
    "False",
    "~",
    "null",
    "Null",
    "",
    "1",
    "-1",
    "+7",
    "0x1F",
    "0o17",
    "012",
    "1_000",
    "1e3",
    "1.5",
    "-.5",
    ".inf",
    "-.Inf",
    "1:20",
    "tls",
    "byo",
    "line 0",
    "sip.example.com",
    "112.126.15.64/27",
    "::1",
    "pl_demo_support",
    "<<x",
    "Sal\u00e9s",
    "y",
    "n",
    "0",
    "3.0",
    "1.2.3",
]


def _document(values: list[str]) -> str:
    return "".join(f"k{i}: {v}\n" for i, v in enumerate(values))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PLAIN), min_size=1, max_size=40))
def test_plain_scalars_read_as_the_safe_loader_reads_them(values: list[str]) -> None:
    text = _document(values)
    doc = parse_text(text, "x.yaml", {}, full=False)
    assert not doc.diagnostics
    expected = yaml.safe_load(text)
    assert doc.value == expected
    assert [type(v) for v in doc.value.values()] == [type(v) for v in expected.values()]


def test_past_the_remembered_tags_values_still_resolve() -> None:
    values = [str(i) for i in range(_TAGS_KEPT + 50)] + ["yes", "tls", "1e3"] * 3 + [f"x{i}" for i in range(20)] + ["0x1F"]
    text = _document(values)
    doc = parse_text(text, "x.yaml", {}, full=False)
    assert doc.value == yaml.safe_load(text)
    assert [type(v) for v in doc.value.values()] == [type(v) for v in yaml.safe_load(text).values()]


def test_interpolation_in_plain_and_quoted_text() -> None:
    doc = parse_text('a: ${HOST}\nb: "${HOST}:5061"\nc: plain\nd: ${HOST}\n', "x.yaml", {"HOST": "sip.example.com"}, full=False)
    assert doc.value == {"a": "sip.example.com", "b": "sip.example.com:5061", "c": "plain", "d": "sip.example.com"}
    assert set(doc.secrets) == {("a",), ("b",), ("d",)}
