"""Bad input in the configuration (issue 10, items 4, 15 and 16): identifiers that match only up to a
final newline, YAML links that lead nowhere, declared secrets too short to mask in free text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler import config

from .conftest import write

VALID = """
version: 1
settings: {app_id: app}
phone_numbers:
  - phone_number: "+14155550100"
    provider: byo
    label: Sales
agents:
  - name: lobby
    preset: p
    properties: {channel: lobby, token: "${TOKEN}", agent_rtc_uid: "1", remote_rtc_uids: ["*"], idle_timeout: 0}
"""


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ('"+14155550100"', '"+14155550100\\n"', "4:19", "phone_numbers[0].phone_number must be an E.164 phone number"),
        ("name: lobby", 'name: "lobby\\n"', "8:11", "agents[0].name must be lowercase letters, digits and dashes"),
    ],
)
def test_identifiers_must_match_completely(tmp_path: Path, old: str, new: str, where: str, message: str) -> None:
    path = write(tmp_path / "agora.yaml", VALID.replace(old, new))
    result = config.check([str(path)], {"TOKEN": "007eJxToken-long-enough"})
    assert [f"{e.line}:{e.col}" for e in result.errors] == [where], result.errors
    assert result.errors[0].message.startswith(message) and result.desired is None


def test_the_valid_document_is_valid(tmp_path: Path) -> None:
    path = write(tmp_path / "agora.yaml", VALID)
    result = config.check([str(path)], {"TOKEN": "007eJxToken-long-enough"})
    assert result.errors == [] and result.warnings == []


def test_a_dangling_yaml_link_in_a_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", VALID)
    os.symlink(tmp_path / "gone.yaml", tmp_path / "b.yaml")
    result = config.check([str(tmp_path)], {"TOKEN": "007eJxToken-long-enough"})
    assert [(e.file, e.message) for e in result.errors] == [
        (
            str(tmp_path / "b.yaml"),
            f"the link {tmp_path / 'b.yaml'} points to {tmp_path / 'gone.yaml'}, which does not exist; fix or remove it",
        )
    ]
    assert result.desired is None


def test_a_looping_yaml_link_is_an_error_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", VALID)
    os.symlink(tmp_path / "c.yaml", tmp_path / "b.yaml")
    os.symlink(tmp_path / "b.yaml", tmp_path / "c.yaml")
    result = config.check([str(tmp_path)], {"TOKEN": "007eJxToken-long-enough"})
    assert sorted(e.message for e in result.errors) == [
        f"the link {tmp_path / 'b.yaml'} loops (it leads back to itself); fix or remove it",
        f"the link {tmp_path / 'c.yaml'} loops (it leads back to itself); fix or remove it",
    ]
    named = config.check([str(tmp_path / "b.yaml")], {})
    assert [e.message for e in named.errors] == [f"the link {tmp_path / 'b.yaml'} loops (it leads back to itself); fix or remove it"]


def test_a_working_yaml_link_is_read(tmp_path: Path) -> None:
    write(tmp_path / "shared" / "numbers.yaml", VALID)
    (tmp_path / "conf").mkdir()
    os.symlink(tmp_path / "shared" / "numbers.yaml", tmp_path / "conf" / "numbers.yaml")
    result = config.check([str(tmp_path / "conf")], {"TOKEN": "007eJxToken-long-enough"})
    assert result.errors == [] and result.desired is not None and len(result.desired.phone_numbers) == 1


def test_a_short_declared_secret_gets_a_warning_and_is_still_masked(tmp_path: Path) -> None:
    text = VALID.replace("label: Sales", 'label: Sales\n    outbound_config: {address: "bob:pw1@sip.example.com"}')
    path = write(tmp_path / "agora.yaml", text)
    result = config.check([str(path)], {"TOKEN": "tok7"})
    short = [w for w in result.warnings if "shorter than 8 characters" in w.message]
    assert [(w.path, w.line) for w in short] == [("phone_numbers[0].outbound_config.address", 7), ("agents[0].properties.token", 11)]
    assert result.desired is not None
    agent = result.desired.agents[0]
    assert agent.is_secret_path("properties.token")
    long_enough = config.check([str(write(tmp_path / "ok.yaml", VALID))], {"TOKEN": "007eJxToken-long-enough"})
    assert not [w for w in long_enough.warnings if "shorter than" in w.message]


NESTED_SECRETS = """
version: 1
settings: {app_id: app}
agents:
  - name: lobby
    preset: p
    properties:
      channel: lobby
      token: "${TOKEN}"
      agent_rtc_uid: "1"
      remote_rtc_uids: ["*"]
      idle_timeout: 0
      llm:
        url: https://llm.example.com
        headers: {X-Trace: "abc", Other: ["de", {k: "fgh"}], Long: "long-enough-value"}
        api_key: "k1"
        params: {model: m, nested: [{password: "pw"}, "plain"], address: "sip.example.com"}
      tts: {vendor: v, params: {key: "${TTS_KEY}", voices: [{secret: "s1"}]}}
"""


def test_secrets_in_nested_maps_and_lists_are_warned_about_where_they_are(tmp_path: Path) -> None:
    """Every literal and every short secret, however deep (in lists, below a credential key), gets its
    warning at its own line; ordinary values and declared `${VAR}`s of good length get none."""
    result = config.check([str(write(tmp_path / "agora.yaml", NESTED_SECRETS))], {"TOKEN": "007eJxToken-long-enough", "TTS_KEY": "k"})
    paths = sorted((w.path, w.line, "literal" if "literal" in w.message else "short") for w in result.warnings)
    assert paths == [
        ("agents[0].properties.llm.api_key", 15, "literal"),
        ("agents[0].properties.llm.api_key", 15, "short"),
        ("agents[0].properties.llm.headers", 14, "literal"),
        ("agents[0].properties.llm.headers.Other[0]", 14, "short"),
        ("agents[0].properties.llm.headers.Other[1].k", 14, "short"),
        ("agents[0].properties.llm.headers.X-Trace", 14, "short"),
        ("agents[0].properties.llm.params.nested[0].password", 16, "literal"),
        ("agents[0].properties.llm.params.nested[0].password", 16, "short"),
        ("agents[0].properties.tts.params.key", 17, "short"),
        ("agents[0].properties.tts.params.voices[0].secret", 17, "literal"),
        ("agents[0].properties.tts.params.voices[0].secret", 17, "short"),
    ]
