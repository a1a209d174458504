"""The CI recipes of examples/ci/ run: pull request -> sticky plan comment + artifact, merge -> apply
exactly that plan, schedule -> drift; for GitHub Actions and GitLab CI, against `emulator serve`.
Also the pre-commit hook and every `agora-reconciler` command line the recipes and README show."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from reconciler.cli import cli

from .ci_runner import ROOT, Forge, GitHubRun, copy_quickstart, fake_pip, gl_job_runs, gl_run_job, serve_forge
from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator

GITHUB = ROOT / "examples" / "ci" / "github-actions.yml"
GITLAB = ROOT / "examples" / "ci" / "gitlab-ci.yml"
MARKER = "<!-- agora-reconciler plan: infra/agora -->"


@pytest.fixture
def forge() -> Any:
    fake = Forge()
    server = serve_forge(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    fake_pip(path, tmp_path / "pip.log")
    return path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def repository(tmp_path: Path) -> Path:
    """A team's repository with the quick start under infra/agora, pushed to a bare origin."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    git(workspace, "init", "-q", "-b", "main")
    copy_quickstart(workspace, "infra/agora")
    git(workspace, "add", ".")
    git(workspace, "commit", "-q", "-m", "agora config")
    git(tmp_path, "init", "-q", "--bare", "origin.git")
    git(workspace, "remote", "add", "origin", str(tmp_path / "origin.git"))
    git(workspace, "push", "-q", "-u", "origin", "main")
    return workspace


# --------------------------------------------------------------------------- GitHub Actions
def test_github_workflow_plans_comments_once_applies_the_reviewed_plan_and_checks_drift(
    tmp_path: Path, emu: Emulator, forge: Forge, bin_dir: Path
) -> None:
    workflow = yaml.safe_load(GITHUB.read_text())
    workspace = repository(tmp_path)
    artifacts: dict[int, Any] = {}
    secrets = {"AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET}
    variables = {"AGORA_ENDPOINT": emu.url, "AGORA_RECONCILER_REPOSITORY": "acme/agora-reconciler"}
    head = "a1" * 20

    def run(event_name: str, run_id: int, sha: str, **github: Any) -> GitHubRun:
        return GitHubRun(workflow, workspace, forge, artifacts, run_id, event_name, {"sha": sha, **github}, secrets, variables, bin_dir)

    # Someone else's comments, 150 of them (the sticky one must be found on any page), and the plan
    # comment of another configuration in the same pull request: both left alone.
    forge.comments[7] = [{"id": i, "body": f"looks good {i}"} for i in range(1, 151)]
    forge.comments[7].insert(3, {"id": 999, "body": "<!-- agora-reconciler plan: infra/other -->\n\nother plan"})
    pr = {"event": {"pull_request": {"number": 7}}}
    first = run("pull_request", 501, head, **pr)
    assert [first.job_runs(j) for j in ("plan", "apply", "drift")] == [True, False, False]
    assert first.run_job("plan") == "success", [(r.name, r.stderr) for r in first.results]
    ours = [c for c in forge.comments[7] if c["body"].startswith(MARKER + "\n")]
    assert len(ours) == 1 and "Plan: 3 to create" in ours[0]["body"] and "```mermaid" in ours[0]["body"]
    assert (tmp_path / "pip.log").read_text().split() == ["install", "./.agora-reconciler-src"]
    assert json.loads(artifacts[501]["agora-plan"]["plan.json"])["summary"]["create"] == 3
    assert len(emu.mutating()) == 0  # a pull request never writes to the account

    second = run("pull_request", 502, head, **pr)  # a re-run edits the same comment
    assert second.run_job("plan") == "success"
    assert [c["id"] for c in forge.comments[7] if c["body"].startswith(MARKER)] == [ours[0]["id"]]
    assert ("PATCH", f"/repos/acme/telephony/issues/comments/{ours[0]['id']}") in forge.log
    assert len(forge.comments[7]) == 152 and forge.comments[7][3]["body"].endswith("other plan")

    # Merged: the push to main applies the plan of the last successful run for the PR's head.
    merge = "b2" * 20
    forge.commit_pulls[merge] = [{"number": 7, "head": {"sha": head}}]
    forge.runs += [
        {"id": rid, "workflow": "agora.yml", "event": "pull_request", "status": "success", "head_sha": head} for rid in (501, 502)
    ]
    push = run("push", 601, merge)
    assert [push.job_runs(j) for j in ("plan", "apply", "drift")] == [False, True, False]
    assert push.run_job("apply") == "success", [(r.name, r.stdout, r.stderr) for r in push.results]
    assert sorted(emu.numbers()) == ["+14155550100", "+14155550101"] and len(emu.agents("quickstart-app")) == 1
    assert "Apply complete: 3 created." in push.results[-2].stderr
    log = git(tmp_path / "origin.git", "log", "--format=%s", "main")
    assert log.splitlines()[0] == "agora: ledger after applying the plan of #7 [skip ci]"
    ledger = json.loads(git(tmp_path / "origin.git", "show", "main:infra/agora/.agora-reconciler/state.json"))
    assert set(ledger["resources"]) == {"phone_number/+14155550100", "phone_number/+14155550101", "agent/lobby-concierge"}

    # Scheduled drift check: green while in sync; red with annotations and a summary on drift.
    in_sync = run("schedule", 701, merge)
    assert [in_sync.job_runs(j) for j in ("plan", "apply", "drift")] == [False, False, True]
    assert in_sync.run_job("drift") == "success"
    emu.admin("POST", f"agents/{ledger['resources']['agent/lobby-concierge']['agent_id']}/crash")
    drifted = run("schedule", 702, merge)
    assert drifted.run_job("drift") == "failure"
    check = drifted.results[-1]
    assert check.returncode == 2
    assert re.search(r"^::warning file=infra/agora/agora\.yaml,line=\d+,col=\d+,title=drift%3A agent/lobby-concierge::", check.stdout, re.M)
    summary = (tmp_path / "summary-702.md").read_text()
    assert summary.startswith("<!-- agora-reconciler drift: infra/agora -->") and "### agora-reconciler drift" in summary


def test_github_apply_refuses_a_plan_that_went_stale_and_writes_nothing(tmp_path: Path, emu: Emulator, forge: Forge, bin_dir: Path) -> None:
    workflow = yaml.safe_load(GITHUB.read_text())
    workspace = repository(tmp_path)
    artifacts: dict[int, Any] = {}
    secrets = {"AGORA_CUSTOMER_ID": CUSTOMER_ID, "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET}
    variables = {"AGORA_ENDPOINT": emu.url}
    head, merge = "c3" * 20, "d4" * 20
    planned = GitHubRun(
        workflow,
        workspace,
        forge,
        artifacts,
        801,
        "pull_request",
        {"sha": head, "event": {"pull_request": {"number": 9}}},
        secrets,
        variables,
        bin_dir,
    )
    assert planned.run_job("plan") == "success"
    emu.seed(
        phone_numbers=[
            {
                "provider": "byo",
                "phone_number": "+14155550100",
                "label": "console edit",
                "inbound": True,
                "outbound": True,
                "inbound_config": {},
                "outbound_config": {"address": "sip.example.com", "transport": "tls"},
            }
        ]
    )
    forge.commit_pulls[merge] = [{"number": 9, "head": {"sha": head}}]
    forge.runs.append({"id": 801, "workflow": "agora.yml", "event": "pull_request", "status": "success", "head_sha": head})
    before = len(emu.mutating())
    push = GitHubRun(workflow, workspace, forge, artifacts, 802, "push", {"sha": merge}, secrets, variables, bin_dir)
    assert push.run_job("apply") == "failure"
    applied = next(r for r in push.results if r.name == "Apply exactly the reviewed plan")
    assert applied.returncode == 1 and "the plan is stale" in applied.stderr
    assert len(emu.mutating()) == before


def test_github_apply_without_a_reviewed_plan_fails_before_touching_the_account(
    tmp_path: Path, emu: Emulator, forge: Forge, bin_dir: Path
) -> None:
    workflow = yaml.safe_load(GITHUB.read_text())
    push = GitHubRun(workflow, repository(tmp_path), forge, {}, 901, "push", {"sha": "e5" * 20}, {}, {"AGORA_ENDPOINT": emu.url}, bin_dir)
    assert push.run_job("apply") == "failure"
    found = next(r for r in push.results if r.name == "Find the plan reviewed on the merged pull request")
    assert found.returncode == 1 and "was not merged from a pull request" in found.stderr
    assert "Apply exactly the reviewed plan" in push.skipped and emu.mutating() == []


# --------------------------------------------------------------------------- GitLab CI
def test_gitlab_pipeline_notes_once_applies_the_reviewed_plan_commits_the_ledger_and_checks_drift(
    tmp_path: Path, emu: Emulator, forge: Forge, bin_dir: Path
) -> None:
    pipeline = yaml.safe_load(GITLAB.read_text())
    assert pipeline["default"]["image"] == {"name": "$AGORA_RECONCILER_IMAGE", "entrypoint": [""]}
    workspace = tmp_path / "ws"
    copy_quickstart(workspace, "infra/agora")
    common = {
        "CI_API_V4_URL": forge.url + "/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_DEFAULT_BRANCH": "main",
        "CI_SERVER_HOST": "gitlab.example.com",
        "GITLAB_API_TOKEN": "glpat-test-token",
        "AGORA_CUSTOMER_ID": CUSTOMER_ID,
        "AGORA_CUSTOMER_SECRET": CUSTOMER_SECRET,
        "AGORA_ENDPOINT": emu.url,
    }
    mr = {**common, "CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "5", "CI_COMMIT_SHA": "f6" * 20}
    assert [gl_job_runs(pipeline, j, mr) for j in ("validate", "plan", "apply", "drift")] == [True, True, False, False]
    forge.notes[5] = [{"id": i, "body": f"note {i}"} for i in range(1, 121)]
    for attempt in range(2):
        validated, _ = gl_run_job(pipeline, "validate", workspace=workspace, variables=mr, bin_dir=bin_dir)
        assert validated.returncode == 0, validated.stderr
        planned, _ = gl_run_job(pipeline, "plan", workspace=workspace, variables=mr, bin_dir=bin_dir)
        assert planned.returncode == 0, planned.stderr
        ours = [n for n in forge.notes[5] if n["body"].startswith(MARKER + "\n")]
        assert len(ours) == 1 and "Plan: 3 to create" in ours[0]["body"], attempt
    assert len(forge.notes[5]) == 121 and emu.mutating() == []
    for name in pipeline["plan"]["artifacts"]["paths"]:  # the runner keeps the artifacts of the MR's plan job
        forge.artifacts[("refs/merge-requests/5/head", "plan", name)] = (workspace / name).read_bytes()
        (workspace / name).unlink()

    merge = "a7" * 20
    forge.commit_mrs[merge] = [{"iid": 5}]
    push = {**common, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main", "CI_COMMIT_SHA": merge}
    assert [gl_job_runs(pipeline, j, push) for j in ("validate", "plan", "apply", "drift")] == [False, False, True, False]
    applied, after = gl_run_job(pipeline, "apply", workspace=workspace, variables=push, bin_dir=bin_dir)
    assert applied.returncode == 0, applied.stderr
    assert after is not None and after.returncode == 0, after.stderr
    assert sorted(emu.numbers()) == ["+14155550100", "+14155550101"]
    ledger = "infra/agora/.agora-reconciler/state.json"
    assert forge.commits[-1]["commit_message"] == "agora: ledger after applying the plan of !5 [skip ci]"
    assert forge.files[ledger] == (workspace / ledger).read_text()

    schedule = {**common, "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main"}
    assert [gl_job_runs(pipeline, j, schedule) for j in ("validate", "plan", "apply", "drift")] == [False, False, False, True]
    assert gl_run_job(pipeline, "drift", workspace=workspace, variables=schedule, bin_dir=bin_dir)[0].returncode == 0
    agent_id = json.loads((workspace / ledger).read_text())["resources"]["agent/lobby-concierge"]["agent_id"]
    emu.admin("POST", f"agents/{agent_id}/crash")
    drifted, _ = gl_run_job(pipeline, "drift", workspace=workspace, variables=schedule, bin_dir=bin_dir)
    assert drifted.returncode == 2 and "### agora-reconciler drift" in (workspace / "drift.md").read_text()


# --------------------------------------------------------------------------- pre-commit and command lines
def test_pre_commit_hook_validates_the_configuration(tmp_path: Path) -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "validate")
    assert hook["language"] == "python" and hook["pass_filenames"] is False and re.search(hook["files"], "infra/agora/numbers.yaml")
    command = shlex.split(hook["entry"])
    assert command[0] == "agora-reconciler" and cli.get_command(click.Context(cli), command[1]) is not None
    good = subprocess.run([*command, str(ROOT / "examples" / "quickstart")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    broken = tmp_path / "agora.yaml"
    broken.write_text("version: 1\nphone_numbers:\n  - phone_number: +14155550100\n")
    bad = subprocess.run([*command, str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1 and f"{broken}:3:" in bad.stderr


def _code(source: Path) -> str:
    """The text that is meant to run: recipe scripts, README code blocks and code spans."""
    text = source.read_text()
    if source.suffix == ".md":
        blocks = []
        for language, body in re.findall(r"```([a-z]*)\n(.*?)```", text, re.S):  # a console block: only its commands
            blocks.append("\n".join(line[2:] for line in body.splitlines() if line.startswith("$ ")) if language == "console" else body)
        return "\n".join(blocks + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)))
    scripts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("run", "script", "after_script", "entry"):
                    scripts.extend([value] if isinstance(value, str) else [str(v) for v in value])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(text))
    return "\n".join(scripts)


def _command_lines(text: str) -> list[list[str]]:
    """`agora-reconciler ...` invocations; synopses (`[--format text|json]`, `PATH...`) are skipped."""
    lines = []
    for match in re.finditer(r"(?<![\w./-])agora-reconciler ((?:[^\n`'#|;&>)]|\\\n)+)", text):
        words = shlex.split(match.group(1).replace("\\\n", " "))
        if not words or not re.fullmatch(r"-{0,2}[a-z][a-z-]*", words[0]):  # prose, or an image name (`docker build -t agora-reconciler .`)
            continue
        if not any(w.startswith("[") or "..." in w or re.fullmatch(r"[A-Z_]+", w) for w in words):
            lines.append(words)
    return lines


@pytest.mark.parametrize("source", [GITHUB, GITLAB, ROOT / "README.md", ROOT / ".pre-commit-hooks.yaml"], ids=lambda p: p.name)
def test_every_command_line_shown_exists_with_those_options(source: Path) -> None:
    lines = _command_lines(_code(source))
    assert lines
    for words in lines:
        command: click.Command = cli
        args = list(words)
        while isinstance(command, click.Group) and args and command.get_command(click.Context(command), args[0]) is not None:
            found = command.get_command(click.Context(command), args.pop(0))
            assert found is not None
            command = found
        if isinstance(command, click.Group) and (not args or args[0].startswith("-")):
            continue
        assert not isinstance(command, click.Group), f"{source.name}: no command {words}"
        try:
            command.make_context(command.name or "", args, resilient_parsing=False)
        except click.exceptions.Exit:
            pass
        except click.UsageError as exc:
            raise AssertionError(f"{source.name}: agora-reconciler {' '.join(words)}: {exc}") from None


def test_recipes_install_the_tool_from_a_checkout_or_the_image_never_from_a_registry() -> None:
    for recipe in (GITHUB, GITLAB, ROOT / "README.md", ROOT / ".pre-commit-hooks.yaml"):
        assert not re.search(r"pip install (-\S+ )*agora-reconciler\b", recipe.read_text()), recipe.name
    steps = [s for job in yaml.safe_load(GITHUB.read_text())["jobs"].values() for s in job["steps"]]
    assert {s.get("run") for s in steps if "pip install" in str(s.get("run"))} == {"pip install ./.agora-reconciler-src"}
