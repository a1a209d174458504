"""The plans the CLI prints, byte for byte: a generated declaration (fixed seed) is applied to the
embedded local API, then changed so that its plan creates, updates, replaces and deletes numbers
and agents, with drift and secrets (`${VAR}`s, credential-named keys, secrets inside lists,
write-only SIP passwords, non-ASCII and JSON-escaped characters). `plan` (text, json, markdown),
`drift --format github` and `apply` must print exactly the golden files under
`tests/golden/pipeline/` (UPDATE_GOLDEN=1 rewrites them), and no secret may appear in any of it.

Only what differs between runs by design is normalised before comparing: the emulator's random
agent ids, and the JSON plan's creation time, digests and tool version (the digests are keyed by the
ledger's random salt)."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

GOLDEN = Path(__file__).parent / "golden" / "pipeline"
SECRETS = {
    "SIP_PASSWORD": 'Sip-Pa55word-\u00e9"quoted"\\back',
    "RTC_TOKEN": "007eJxTYLh-rtc-token-golden-9d1c3f",
    "OPENAI_KEY": "sk-live-golden-4f8a2b9c7d6e5f4a3b2c",
    "SIP_PASSWORD_NEW": "new-sip-p\u00e4ssword-\\u0041-2",
    "TTS_KEY": "tts-k\u00eay-\u2603-sn\u00f6wman-0042",
    "VENDOR_SECRET": "vendor/secret+value=with&chars",
}
LITERAL_SECRETS = ["literal-headers-secret-77aa", "plain-sip-pw-0099", "literal-api-key-in-list-55"]
LABELS = ["Support", "Sal\u00e9s \u2014 \u6771\u4eac", 'quote "q" and \\ back', "tab\there", "emoji \U0001f4de line", "line"]


def _number(rng: random.Random, i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "phone_number": f"+1415555{i:04d}",
        "provider": rng.choice(["byo", "twilio"]),
        "label": f"{rng.choice(LABELS)} {i}",
    }
    inbound: dict[str, Any] = {}
    if rng.random() < 0.7:
        inbound["allowed_addresses"] = rng.sample(["112.126.15.64/27", "10.0.0.0/8", "::1"], rng.randint(1, 2))
    if rng.random() < 0.8:
        inbound["pipeline_id"] = rng.choice(["pl_demo_support", "pl_demo_sales"])
    if inbound:
        doc["inbound_config"] = inbound
    outbound: dict[str, Any] = {
        "address": rng.choice(["sip.example.com", "trunk.example.net:5061"]),
        "transport": rng.choice(["tls", "tcp"]),
    }
    if rng.random() < 0.5:
        outbound["pipeline_id"] = rng.choice(["pl_demo_support", "pl_demo_sales"])
    if rng.random() < 0.3:
        outbound["prefix"] = rng.choice(["9", "6036"])
    kind = rng.randint(0, 4)
    if kind == 0:
        outbound["password"] = "${SIP_PASSWORD}"
    elif kind == 1:
        outbound["password"] = LITERAL_SECRETS[1]
    doc["outbound_config"] = outbound
    return doc


def _agent(rng: random.Random, i: int) -> dict[str, Any]:
    props: dict[str, Any] = {
        "channel": f"room-{i}",
        "token": "${RTC_TOKEN}",
        "agent_rtc_uid": str(1000 + i),
        "remote_rtc_uids": ["*"],
        "idle_timeout": 0,
        "llm": {
            "api_key": "${OPENAI_KEY}",
            "headers": {"X-Vendor": "${VENDOR_SECRET}"} if i % 2 else {"X-Literal": LITERAL_SECRETS[0]},
            "system_messages": [{"role": "system", "content": f"Sei gentile, {rng.choice(LABELS)} \u00ab{i}\u00bb"}],
            "params": {"model": "gpt-4o-mini", "max_tokens": 100 + i},
        },
        "tts": {"vendor": "minimax", "params": {"key": "${TTS_KEY}", "voices": [{"name": "v1", "api_key": LITERAL_SECRETS[2]}]}},
    }
    return {"name": f"agent-{i}", "preset": "deepgram_nova_3,openai_gpt_4o_mini", "properties": props}


def declarations() -> tuple[dict[str, Any], dict[str, Any]]:
    """The first declaration, and the second one whose plan against the first's apply is checked."""
    rng = random.Random(15)
    numbers = [_number(rng, i) for i in range(24)]
    agents = [_agent(rng, i) for i in range(4)]
    settings = {"endpoint": "local", "app_id": "app-golden", "state": "state.json", "allow_replace": True}
    first = {"version": 1, "settings": settings, "phone_numbers": numbers[:18], "agents": agents[:3]}
    changed = [json.loads(json.dumps(n)) for n in numbers[:18]]
    for n in changed[0:3]:  # updates in place: a pipeline binding
        n.setdefault("inbound_config", {})["pipeline_id"] = "pl_demo_other"
    for n in changed[3:6]:  # replaces: an immutable field
        n["label"] = n["label"] + ' \u2192 new "label"'
    changed[6]["outbound_config"]["password"] = "${SIP_PASSWORD_NEW}"  # a secret changed
    changed[7]["outbound_config"]["transport"] = "udp"
    del changed[8:11]  # deletes
    agents2 = [json.loads(json.dumps(a)) for a in agents]
    agents2[0]["properties"]["llm"]["params"]["max_tokens"] = 7
    agents2[1]["properties"]["tts"]["params"]["voices"].append({"name": "v2", "api_key": "${OPENAI_KEY}"})
    del agents2[2]  # an agent deleted; agents2[2] is now agent-3, created
    second = {"version": 1, "settings": settings, "phone_numbers": changed + numbers[18:], "agents": agents2}
    return first, second


def write(root: Path, doc: dict[str, Any]) -> None:
    (root / "agora.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


def drift_outside(path: Path) -> None:
    """Edit the local API's file as someone outside the tool would: a label, a pipeline binding,
    and an agent that failed."""
    doc = json.loads(path.read_text())
    doc["pipelines"]["pl_demo_other"] = "Other desk"  # the second declaration binds it
    doc["numbers"]["+14155550012"]["label"] = "edited \u00e0 la main"
    drifted = doc["numbers"]["+14155550013"]
    drifted["inbound_pipeline_id"] = "pl_demo_support" if drifted["inbound_pipeline_id"] == "pl_demo_sales" else "pl_demo_sales"
    failed = next(a for a in doc["agents"] if a["name"].startswith("agent-1-"))
    failed.update(status="FAILED", message='crashed: "out of memory"', stop_ts=failed["start_ts"] + 1)
    path.write_text(json.dumps(doc))


AGENT_ID = re.compile(r"\b[0-9A-Z]{24}\b")
INSTANCE = re.compile(r"\b(agent-[0-9]+)-[0-9a-f]{8}\b")


def normalise(text: str) -> str:
    text = INSTANCE.sub(r"\1-XXXXXXXX", AGENT_ID.sub("AGENT-ID", text))
    return re.sub(r'"(created_at|live_digest|config_digest|secrets_digest|tool_version)": "[^"]*"', r'"\1": "-"', text)


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for secret in [*SECRETS.values(), *LITERAL_SECRETS]:
        for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
            assert form not in text, f"a secret in {name}"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


def test_plans_of_a_generated_declaration_are_byte_identical(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AGORA_ENDPOINT", "AGORA_RECONCILER_STATE", "GITHUB_STEP_SUMMARY", "CI"):
        monkeypatch.delenv(key, raising=False)
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(tmp_path)
    first, second = declarations()
    write(tmp_path, first)
    applied = run("apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    check("first-apply.txt", normalise(applied.stdout))
    drift_outside(tmp_path / "local-api.json")
    write(tmp_path, second)
    outputs = {
        "plan.txt": run("plan"),
        "plan.json": run("plan", "--format", "json"),
        "plan.md": run("plan", "--format", "markdown"),
        "drift.github.txt": run("drift", "--format", "github"),
        "drift.txt": run("drift"),
    }
    for name, result in outputs.items():
        assert result.exit_code in (0, 2), result.output
        check(name, normalise(result.stdout))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run("drift", "--format", "github")
    check("drift.summary.md", normalise(summary.read_text(encoding="utf-8")))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    second_apply = run("apply", "--auto-approve", "--force")
    assert second_apply.exit_code == 0, second_apply.output
    check("second-apply.txt", normalise(second_apply.stdout))
    # changes complete in parallel, in any order: the progress lines sorted, and the final count's parts
    progress = [_counts_sorted(line) for line in normalise(second_apply.stderr).splitlines(keepends=True)]
    check("second-apply.stderr.txt", "".join(sorted(progress)))


def _counts_sorted(line: str) -> str:
    match = re.fullmatch(r"Apply complete: (.*)\.\n", line)
    return f"Apply complete: {', '.join(sorted(match.group(1).split(', ')))}.\n" if match else line
