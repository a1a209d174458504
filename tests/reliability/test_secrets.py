"""Secrets never leak: every command, every format, -vv, errors that echo requests, internal errors."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from reconciler.secrets import MASK, REDACTOR, RedactingFilter, RedactingFormatter, redact

from ..conftest import CUSTOMER_SECRET, Emulator, start_emulator
from ..e2e import Project, agent_spec, number_spec
from .helpers import base, seed_bystanders

SECRETS = {
    "RTC_TOKEN": "007eJxTYLh-real-looking-rtc-token-4c1a9e",
    "OPENAI_KEY": "sk-proj-9fJw2kQ8vT1xL0aZ3bN7",
    "AZURE_KEY": "b3f1c9e8d7a64f2e9c1b0a7d6e5f4c3b",
    "SIP_PASSWORD": "Tr0ub4dor&3-sip",
    "ENCRYPTION_KEY": "enc-key-0f9e8d7c6b5a4938",
}


def _declare_secrets(project: Project) -> None:
    base(project)
    project.numbers[0]["outbound_config"]["address"] = "alice:${SIP_PASSWORD}@sip.example.com"
    project.numbers[1]["outbound_config"]["password"] = "${SIP_PASSWORD}"
    agent = agent_spec("secretive")
    agent["properties"]["tts"] = {"vendor": "microsoft", "params": {"key": "${AZURE_KEY}", "region": "eastus"}}
    agent["properties"]["rtc"] = {"encryption_key": "${ENCRYPTION_KEY}", "encryption_mode": 7}
    agent["properties"]["llm"]["headers"] = {"Authorization": "Bearer ${OPENAI_KEY}"}
    project.agents.append(agent)
    project.write()


def _everything_written(root: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix != ".yaml"]


def test_no_secret_anywhere(project: Project, run: Any, emu: Emulator, api_env: dict[str, str], tmp_path: Path, monkeypatch: Any) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    seed_bystanders(emu)
    _declare_secrets(project)
    path = str(project.path)
    outputs: list[str] = []
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    commands: list[tuple[str, ...]] = [("validate", path, "--format", fmt) for fmt in ("text", "json", "github")]
    commands += [("plan", path, "--format", fmt, "-vv") for fmt in ("text", "json", "markdown")]
    commands += [("plan", path, "--out", str(project.root / "plan.json"), "-vv")]
    commands += [("apply", path, "--auto-approve", "-vv", "--format", "json")]
    for command in commands:
        outputs.append(run(*command).output)
    # rotate every secret: the update and replace plans carry "(sensitive)" markers, never values
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value[::-1])
    commands = [("drift", path, "--format", fmt, "-vv") for fmt in ("text", "json", "markdown", "github")]
    commands += [("state", "list", "--state", str(project.state)), ("state", "show", "agent/secretive", "--state", str(project.state))]
    commands += [("export", "--app-id", "app-e2e", "-vv")]
    for command in commands:
        outputs.append(run(*command).output)
    # an API error that echoes the request body (which carries the rotated secrets)
    emu.fault(method="POST", path="/update$|/join$", status=400, count=10, echo_body=True)
    emu.fault(method="POST", path="phone-numbers$", status=400, count=10, echo_body=True)
    echoed = run("apply", path, "--auto-approve", "-vv", "--allow-replace")
    assert echoed.exit_code == 1 and "request was:" in echoed.stderr
    outputs.append(echoed.output)
    emu.admin("DELETE", "faults")
    # an internal error: a malformed answer from the API, with a traceback at -vv
    emu.fault(method="GET", path="/agents$", body={"data": {"list": [{"status": "RUNNING"}]}, "meta": {}})
    broken = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", path, "-vv"], capture_output=True, text=True, env={**os.environ, **api_env}, timeout=60
    )
    assert broken.returncode == 1 and "internal error" in broken.stderr and "Traceback" in broken.stderr
    outputs.append(broken.stdout + broken.stderr)
    written = [*_everything_written(project.root), summary.read_text()]
    secrets = [*SECRETS.values(), *(v[::-1] for v in SECRETS.values()), CUSTOMER_SECRET]
    for text in outputs + written:
        for secret in secrets:
            assert secret not in text
    assert any("(sensitive)" in text for text in outputs) and any("${AZURE_KEY}" in text for text in outputs)


# --------------------------------------------------------------------------- every form of a secret in text (issue 10, item 2)
ODD_SECRET = 'Pässwörd-"quoted"\\back/slash+plus space&amp=7'


@pytest.mark.parametrize(
    "form",
    [
        ODD_SECRET,
        json.dumps(ODD_SECRET)[1:-1],
        json.dumps(ODD_SECRET, ensure_ascii=False)[1:-1],
        json.dumps(json.dumps(ODD_SECRET))[1:-1],  # JSON inside JSON (an echoed request body)
        repr(ODD_SECRET)[1:-1],
        urllib.parse.quote(ODD_SECRET, safe=""),
        urllib.parse.quote(ODD_SECRET),
        urllib.parse.quote_plus(ODD_SECRET),
    ],
)
def test_redact_catches_every_encoded_form(form: str) -> None:
    REDACTOR.register(ODD_SECRET)
    masked = redact(f"before {form} after")
    assert masked.startswith("before ") and masked.endswith(" after") and MASK in masked
    assert "quoted" not in masked and "rd-" not in masked and "amp" not in masked


def test_redact_catches_a_value_read_from_a_file_in_repr() -> None:
    REDACTOR.register("tok-from-a-file-4417\n")
    assert redact(f"got {'tok-from-a-file-4417' + chr(10)!r}") == f"got '{MASK}'"
    assert redact("bare tok-from-a-file-4417 here") == f"bare {MASK} here"


def test_redact_masks_any_basic_or_token_header() -> None:
    header = "Basic " + base64.b64encode(b"someone-else:Unregistered-Secret-77").decode()
    assert redact(f"Authorization: {header}") == f"Authorization: Basic {MASK}"
    assert redact("authorization: agora token=007eJxUnregistered") == f"authorization: agora token={MASK}"
    assert redact("Basic plan, Basic authentication") == "Basic plan, Basic authentication", "ordinary words stay"


def test_a_logged_traceback_is_redacted_after_formatting() -> None:
    secret = "Trace-Secret-Value-6620"
    REDACTOR.register(secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        try:
            raise ValueError(f"unexpected body {json.dumps({'key': secret})!r} for {secret!r}")
        except ValueError:
            logger.debug("unexpected error in %s", secret, exc_info=True)
        logger.debug("stack", stack_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text and "ValueError: unexpected body" in text
    assert secret not in text and MASK in text
    formatted = RedactingFormatter(logging.Formatter("%(message)s %(extra_field)s"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", None, None)
    record.extra_field = secret
    assert formatted.format(record) == f"plain {MASK}"


# --------------------------------------------------------------------------- ordinary words are never masked (item 4)
def test_short_values_are_never_searched_for_in_free_text() -> None:
    assert not REDACTOR.register("local") and not REDACTOR.register("demo") and not REDACTOR.register("  short1 ")
    assert REDACTOR.register("long-enough")
    assert redact("Our local support line, pl_demo_sales, short1") == "Our local support line, pl_demo_sales, short1"


def test_endpoint_local_masks_no_ordinary_word(tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AGORA_ENDPOINT", "AGORA_CUSTOMER_ID", "AGORA_CUSTOMER_SECRET", "AGORA_AUTH_TOKEN", "AGORA_RECONCILER_STATE"):
        monkeypatch.delenv(key, raising=False)
    project = Project(tmp_path)
    project.settings = {"endpoint": "local", "state": "state.json"}
    project.numbers = [number_spec("+14155550100", label="Our local support line")]
    project.agents = []
    project.write()
    planned = run("plan", str(project.path), "--format", "json")
    assert planned.exit_code == 0, planned.output
    doc = json.loads(planned.stdout)
    assert doc["endpoint"] == "local"
    label = next(f for f in doc["changes"][0]["fields"] if f["path"] == "label")
    assert label["after"] == "Our local support line" and label["sensitive"] is False
    text = run("plan", str(project.path)).stdout
    assert "Our local support line" in text and "pl_demo_sales" in text and MASK not in text


def test_demo_credentials_mask_no_ordinary_word(tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url, process = start_emulator(env={"AGORA_CUSTOMER_ID": "", "AGORA_CUSTOMER_SECRET": ""})
    try:
        for key, value in {"AGORA_ENDPOINT": url, "AGORA_CUSTOMER_ID": "demo", "AGORA_CUSTOMER_SECRET": "demo"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AGORA_AUTH_TOKEN", raising=False)
        project = Project(tmp_path)
        project.numbers = [number_spec("+14155550100", label="demo line")]
        project.agents = []
        project.write()
        planned = run("plan", str(project.path))
        assert planned.exit_code == 0, planned.output
        assert "pl_demo_sales" in planned.stdout and "demo line" in planned.stdout and MASK not in planned.output
    finally:
        process.terminate()
        process.wait(timeout=10)


# Values that change when encoded: quotes and backslashes (JSON, repr), non-ASCII (\u escapes,
# UTF-8 percent-encoding), a trailing newline, characters a URL encodes, percent signs.
ODD_SECRETS = {
    "SIP_PASSWORD": 'p"a\\ss%40w\u00f6rd',
    "SIP_PASSWORD2": "line-pw-zz\n",
    "RTC_TOKEN": '007eJxRTC"quote\\back',
    "OPENAI_KEY": 'sk-K1-\u00f1and\u00fa-"x"',
    "LIST_SECRET": "K2-listelem-abcdef",
    "NESTED_LIST_SECRET": "K3-nested-list-ghijk",
    "DEEP_SECRET": "K4%2Fencoded%3Dval",
    "BEARER": "K5-bearer-\u20acuro/+=?",
    "PROMPT_SECRET": "K6-sysmsg-secret",
    "TTS_KEY": "K7-ttskey-qwerty&x=1",
}


def _encodings(value: str) -> set[str]:
    """Every way a value may be spelled on its way out (at least 6 characters, to be distinctive)."""
    forms = {value, value.strip(), repr(value)[1:-1], quote(value), quote(value, safe=""), quote_plus(value)}
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {json.dumps(f)[1:-1] for f in list(forms)}  # a JSON document quoted inside another one
    return {f for f in forms if len(f) >= 6}


def _declare_secrets_everywhere(project: Project) -> None:
    project.numbers = [number_spec("+14155550100"), number_spec("+14155550101")]
    project.numbers[0]["outbound_config"]["address"] = "alice:${SIP_PASSWORD}@sip.example.com"
    project.numbers[1]["outbound_config"]["password"] = "${SIP_PASSWORD2}"
    agent = agent_spec("secretive")
    agent["properties"]["llm"]["params"] = {
        "model": "gpt-4o-mini",
        "keys": ["${LIST_SECRET}", ["${NESTED_LIST_SECRET}"]],
        "nested": {"deep": {"thing": "${DEEP_SECRET}"}},
    }
    agent["properties"]["llm"]["headers"] = {"Authorization": "Bearer ${BEARER}"}
    agent["properties"]["llm"]["system_messages"] = [{"role": "system", "content": "hello ${PROMPT_SECRET}"}]
    agent["properties"]["tts"] = {"vendor": "microsoft", "params": {"key": "${TTS_KEY}", "region": "eastus"}}
    project.agents = [agent]
    project.write()


def test_secrets_in_lists_and_in_every_encoding_never_leak(
    project: Project, run: Any, emu: Emulator, api_env: dict[str, str], monkeypatch: Any
) -> None:
    for key, value in ODD_SECRETS.items():
        monkeypatch.setenv(key, value)
    seed_bystanders(emu)
    _declare_secrets_everywhere(project)
    path = str(project.path)
    outputs: list[str] = []
    for fmt in ("text", "json", "markdown"):
        outputs.append(run("plan", path, "--format", fmt, "-vv").output)
    outputs.append(run("plan", path, "--out", str(project.root / "plan.json"), "-vv").output)
    applied = run("apply", path, "--plan", str(project.root / "plan.json"), "-vv", "--format", "json")
    assert applied.exit_code == 0, applied.output
    outputs.append(applied.output)
    for address in ("agent/secretive", "phone_number/+14155550100", "phone_number/+14155550101"):
        outputs.append(run("state", "show", address, "--state", str(project.state)).output)
    # rotate every secret: plans now show the old (ledger) and new values' places
    for key, value in ODD_SECRETS.items():
        monkeypatch.setenv(key, "rot-" + value)
    for fmt in ("text", "json", "markdown", "github"):
        outputs.append(run("drift", path, "--format", fmt, "-vv").output)
    # an API error that echoes the request body, JSON-escaped
    emu.fault(method="POST", path="/update$|/join$", status=400, count=10, echo_body=True)
    emu.fault(method="POST", path="phone-numbers$", status=400, count=10, echo_body=True)
    for fmt in ("text", "json"):
        echoed = run("apply", path, "--auto-approve", "-vv", "--allow-replace", "--format", fmt)
        assert echoed.exit_code == 1 and "request was:" in echoed.stderr
        outputs.append(echoed.output)
    emu.admin("DELETE", "faults")
    done = run("apply", path, "--auto-approve", "-vv", "--allow-replace")
    assert done.exit_code == 0, done.output
    outputs.append(done.output)
    secrets = [*ODD_SECRETS.values(), *("rot-" + v for v in ODD_SECRETS.values())]
    for text in outputs + _everything_written(project.root):
        for secret in secrets:
            for form in _encodings(secret):
                assert form not in text, (secret, form)
