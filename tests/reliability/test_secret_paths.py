"""Secrets inside list elements (item 1 of issue 10): masked, fingerprinted, diffed and rendered as
secrets at their indexed path (`llm.system_messages[0].content`), everywhere, even when they change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.diff import applied_agent_essence, field_changes
from reconciler.model import AgentSpec, is_secret_path, join_path, mask_secrets, secret_display, split_path

from ..conftest import Emulator
from ..e2e import Project, agent_spec

VALUES = {
    "PERSONA": "Persona-Orchid-7731 speaks as the hotel",
    "MCP_URL": "https://mcp-user:Qx7-mcp-pass-2209@mcp.example.com/sse",
    "STOP_WORD": "stopword-Halcyon-4412",
    "UID_SECRET": "remote-uid-Borealis-5510",
}


def _declare(project: Project) -> None:
    agent = agent_spec("listy")
    llm = agent["properties"]["llm"]
    llm["system_messages"] = [{"role": "system", "content": "${PERSONA}"}, {"role": "system", "content": "be brief"}]
    llm["mcp_servers"] = [{"name": "plain", "endpoint": "https://tools.example.com"}, {"name": "private", "endpoint": "${MCP_URL}"}]
    llm["params"] = {"model": "gpt-4o-mini", "stop": [["plain", "${STOP_WORD}"]]}
    agent["properties"]["remote_rtc_uids"] = ["${UID_SECRET}"]
    project.agents = [agent]
    project.write()


def _files(root: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix != ".yaml"]


def _assert_absent(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            for needle in (secret, secret.split(" ")[0]):
                assert needle not in text, f"{needle!r} leaked in:\n{text[:2000]}"


def test_list_element_secrets_never_leave_the_process(
    project: Project, run: Any, emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in VALUES.items():
        monkeypatch.setenv(key, value)
    _declare(project)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    path = str(project.path)
    outputs = [run("plan", path, "--format", fmt).output for fmt in ("text", "json", "markdown")]
    applied = run("apply", path, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    outputs.append(applied.output)
    old = list(VALUES.values())
    # rotate every value: the plan shows changed sensitive fields at their indexed paths, never a value
    for key, value in VALUES.items():
        monkeypatch.setenv(key, value[::-1])
    planned = run("plan", path, "--format", "json", "--out", str(project.root / "plan.json"))
    assert planned.exit_code == 0, planned.output
    fields = {f["path"]: f for c in json.loads(planned.stdout)["changes"] for f in c["fields"]}
    persona = fields["properties.llm.system_messages[0].content"]
    assert {k: persona[k] for k in ("before", "after", "sensitive", "changed")} == {
        "before": "(sensitive)",
        "after": "${PERSONA}",
        "sensitive": True,
        "changed": True,
    }
    assert fields["properties.llm.mcp_servers[1].endpoint"]["after"] == "${MCP_URL}"
    assert fields["properties.llm.params.stop[0][1]"]["after"] == "${STOP_WORD}"
    assert fields["properties.remote_rtc_uids[0]"]["sensitive"] is True
    outputs.append(planned.output)
    outputs += [run("plan", path, "--format", fmt).output for fmt in ("text", "markdown")]
    outputs += [run("drift", path, "--format", fmt).output for fmt in ("text", "json", "markdown", "github")]
    outputs.append(run("state", "show", "agent/listy", "--state", str(project.state)).output)
    applied = run("apply", path, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    outputs.append(applied.output)
    assert (project.root / "state.json.backup").exists()
    new = [v[::-1] for v in VALUES.values()]
    _assert_absent(outputs + _files(project.root) + [summary.read_text()], old + new)
    assert "${PERSONA}" in outputs[-8]  # the text plan names the variable instead


def test_one_path_syntax_round_trips() -> None:
    for text in ("a", "a.b", "a.b[0].c", "a[1][2]", "properties.llm.params.stop[0][1]"):
        assert join_path(split_path(text)) == text
    assert split_path("a.b[0][12].c") == ("a", "b", 0, 12, "c")


@pytest.mark.parametrize(
    "path",
    ["llm.system_messages[0].content", "llm.mcp_servers[1].endpoint", "llm.params.stop[0][1]", "llm.params.stop[0][1].x", "uids[0]"],
)
def test_indexed_secret_paths_and_their_children_are_secret(path: str) -> None:
    secrets = {
        "llm.system_messages[0].content": "${A}",
        "llm.mcp_servers[1].endpoint": "${B}",
        "llm.params.stop[0][1]": "${C}",
        "uids[0]": "${D}",
    }
    assert is_secret_path(path, secrets)
    assert secret_display(path, secrets).startswith("${")
    assert not is_secret_path(path.replace("[0]", "[5]").replace("[1]", "[7]"), secrets)


def test_masking_fingerprinting_and_diffing_keep_list_indices() -> None:
    secrets = {"properties.llm.system_messages[0].content": "${PERSONA}", "properties.remote_rtc_uids[0]": "${UID}"}
    props = {"llm": {"system_messages": [{"role": "system", "content": "Persona-Orchid"}]}, "remote_rtc_uids": ["uid-Borealis"]}
    spec = AgentSpec("a", "app", props, secrets=secrets)
    masked = json.dumps(mask_secrets(spec.essence(), secrets))
    assert "Persona-Orchid" not in masked and "uid-Borealis" not in masked and "${PERSONA}" in masked
    stored = json.dumps(applied_agent_essence(spec, "salt"))
    assert "Persona-Orchid" not in stored and "uid-Borealis" not in stored and "hmac-sha256:" in stored
    rotated = AgentSpec("a", "app", {**props, "llm": {"system_messages": [{"role": "system", "content": "Other"}]}}, secrets=secrets)
    changes = field_changes(applied_agent_essence(spec, "salt"), applied_agent_essence(rotated, "salt"), secrets)
    assert [(c.path, c.before, c.after, c.sensitive) for c in changes] == [
        ("properties.llm.system_messages[0].content", "(sensitive)", "${PERSONA}", True)
    ]
    # a non-secret change in the same list shows the whole list, its secret elements masked
    relabelled = AgentSpec(
        "a", "app", {**props, "llm": {"system_messages": [{"role": "user", "content": "Persona-Orchid"}]}}, secrets=secrets
    )
    changes = field_changes(applied_agent_essence(spec, "salt"), applied_agent_essence(relabelled, "salt"), secrets)
    assert [c.path for c in changes] == ["properties.llm.system_messages"]
    assert "Persona-Orchid" not in json.dumps([c.before for c in changes] + [c.after for c in changes])
