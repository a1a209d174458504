"""`settings.app_certificate` and `settings.token_ttl`: where they come from, their bounds, and
agents that may leave out `properties.token` only when a certificate is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import config

from .conftest import write

CERT = "5CFd2fd1755d40ecb72977518be15d3b"
AGENT = """
agents:
  - name: lobby
    preset: p1
    properties: {channel: lobby, agent_rtc_uid: "1001", remote_rtc_uids: ["*"], idle_timeout: 0}
"""


def _doc(tmp_path: Path, settings: str) -> Path:
    return write(tmp_path / "agora.yaml", f"version: 1\nsettings: {{app_id: app1{settings}}}\n" + AGENT.lstrip("\n"))


def test_a_certificate_from_the_environment_lets_agents_omit_their_token(tmp_path: Path) -> None:
    path = _doc(tmp_path, ', app_certificate: "${CERT}", token_ttl: 1h30m')
    desired = config.load([str(path)], {"CERT": CERT})
    assert desired.settings.app_certificate == CERT and desired.settings.token_ttl == 5400
    assert CERT not in repr(desired.settings) and CERT not in repr(desired)


def test_without_a_certificate_the_token_is_required(tmp_path: Path) -> None:
    result = config.check([str(_doc(tmp_path, ""))], {})
    (error,) = result.errors
    assert (error.line, error.col) == (6, 17)
    assert "missing the required key 'token'" in error.message and "settings.app_certificate" in error.message


@pytest.mark.parametrize(
    ("settings", "env", "message", "at"),
    [
        (", app_certificate: " + CERT, {}, "settings.app_certificate is a literal secret in the file", CERT),
        (', app_certificate: "${CERT}"', {"CERT": CERT[:-1]}, "must be 32 hexadecimal characters (the value has 31 characters)", '"$'),
        (', app_certificate: "${CERT}"', {"CERT": "z" * 32}, "must be 32 hexadecimal characters", '"$'),
        (
            ', app_certificate: "${CERT}", token_ttl: 25h',
            {"CERT": CERT},
            "settings.token_ttl is 25h: a token lives at least 10s and at most 24h",
            "25h",
        ),
        (', app_certificate: "${CERT}", token_ttl: 9s', {"CERT": CERT}, "settings.token_ttl is 9s", "9s"),
    ],
)
def test_bad_token_settings_are_reported_with_positions_and_never_their_value(
    tmp_path: Path, settings: str, env: dict[str, str], message: str, at: str
) -> None:
    path = _doc(tmp_path, settings)
    result = config.check([str(path)], env)
    (error,) = result.errors
    line = path.read_text().splitlines()[1]
    assert message in error.message and (error.line, error.col) == (2, line.index(at) + 1)
    assert all(v not in error.message for v in env.values())


@pytest.mark.parametrize("ttl", ["1d", "ten", "h", "10"])
def test_a_ttl_must_be_a_duration(tmp_path: Path, ttl: str) -> None:
    result = config.check([str(_doc(tmp_path, f", app_certificate: \"${{CERT}}\", token_ttl: '{ttl}'"))], {"CERT": CERT})
    assert [e.path for e in result.errors] == ["settings.token_ttl"]


def test_ttl_bounds_are_inclusive(tmp_path: Path) -> None:
    for ttl, seconds in (("10s", 10), ("24h", 86400), ("1439m60s", 86400)):
        desired = config.load([str(_doc(tmp_path, f', app_certificate: "${{CERT}}", token_ttl: {ttl}'))], {"CERT": CERT})
        assert desired.settings.token_ttl == seconds
