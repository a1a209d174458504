"""Runs the CI recipes of examples/ci/ for the tests: a small GitHub Actions / GitLab CI interpreter
and a fake forge API (comments, notes, pull requests, workflow runs, artifacts, commits).

The recipes' shell and Python steps run for real (bash, python, git, the installed
agora-reconciler against `emulator serve`); only what a hosted runner provides is played here:
expressions (`${{ ... }}`, `rules: if:`), the actions we use (checkout, setup-python,
upload/download-artifact), the forge's REST API, and `pip install` of the tool's checkout.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOL_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- the fake forge
@dataclass
class Forge:
    """GitHub's and GitLab's REST API, the parts the recipes call."""

    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # PR number -> issue comments
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # MR iid -> notes
    commit_pulls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    commit_mrs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[tuple[str, str, str], bytes] = field(default_factory=dict)  # (ref, job, file) -> bytes (GitLab)
    files: dict[str, str] = field(default_factory=dict)  # repository files on the default branch (GitLab)
    commits: list[dict[str, Any]] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1000
    url: str = ""

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        parsed = urllib.parse.urlsplit(raw_path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        path = parsed.path
        self.log.append((method, path))
        for pattern, handler in self.routes():
            match = re.fullmatch(pattern, path)
            if match and handler[0] == method:
                result: tuple[int, Any] = handler[1](*match.groups(), query=query, body=body)
                return result
        return 404, {"message": f"no route {method} {path}"}

    def routes(self) -> list[tuple[str, tuple[str, Any]]]:
        return [
            (r"/repos/[^/]+/[^/]+/issues/(\d+)/comments", ("GET", self.list_comments)),
            (r"/repos/[^/]+/[^/]+/issues/(\d+)/comments", ("POST", self.add_comment)),
            (r"/repos/[^/]+/[^/]+/issues/comments/(\d+)", ("PATCH", self.edit_comment)),
            (r"/repos/[^/]+/[^/]+/commits/([0-9a-f]+)/pulls", ("GET", lambda sha, **_: (200, self.commit_pulls.get(sha, [])))),
            (r"/repos/[^/]+/[^/]+/actions/workflows/([^/]+)/runs", ("GET", self.list_runs)),
            (r"/api/v4/projects/\d+/merge_requests/(\d+)/notes", ("GET", self.list_notes)),
            (r"/api/v4/projects/\d+/merge_requests/(\d+)/notes", ("POST", self.add_note)),
            (r"/api/v4/projects/\d+/merge_requests/(\d+)/notes/(\d+)", ("PUT", self.edit_note)),
            (
                r"/api/v4/projects/\d+/repository/commits/([0-9a-f]+)/merge_requests",
                ("GET", lambda sha, **_: (200, self.commit_mrs.get(sha, []))),
            ),
            (r"/api/v4/projects/\d+/jobs/artifacts/([^/]+)/raw/(.+)", ("GET", self.raw_artifact)),
            (r"/api/v4/projects/\d+/repository/files/([^/]+)", ("GET", self.get_file)),
            (r"/api/v4/projects/\d+/repository/commits", ("POST", self.add_commit)),
        ]

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        size, page = int(query.get("per_page", 30)), int(query.get("page", 1))
        return items[(page - 1) * size : page * size]

    def list_comments(self, pr: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, self._page(self.comments.get(int(pr), []), query)

    def add_comment(self, pr: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        comment = {"id": self.new_id(), "body": body["body"], "user": {"login": "github-actions[bot]"}}
        self.comments.setdefault(int(pr), []).append(comment)
        return 201, comment

    def edit_comment(self, comment_id: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        for comments in self.comments.values():
            for comment in comments:
                if comment["id"] == int(comment_id):
                    comment["body"] = body["body"]
                    return 200, comment
        return 404, {"message": "Not Found"}

    def list_runs(self, workflow: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        runs = [
            r
            for r in self.runs
            if r["workflow"] == workflow and all(r.get(k) == query[k] for k in ("event", "status", "head_sha") if k in query)
        ]
        return 200, {"total_count": len(runs), "workflow_runs": sorted(runs, key=lambda r: -r["id"])}

    def list_notes(self, iid: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, self._page(self.notes.get(int(iid), []), query)

    def add_note(self, iid: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        note = {"id": self.new_id(), "body": body["body"], "author": {"username": "project_42_bot"}}
        self.notes.setdefault(int(iid), []).append(note)
        return 201, note

    def edit_note(self, iid: str, note_id: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        for note in self.notes.get(int(iid), []):
            if note["id"] == int(note_id):
                note["body"] = body["body"]
                return 200, note
        return 404, {"message": "404 Not found"}

    def raw_artifact(self, ref: str, name: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        data = self.artifacts.get((urllib.parse.unquote(ref), query.get("job", ""), name))
        return (200, data) if data is not None else (404, {"message": "404 Not found"})

    def get_file(self, path: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        name = urllib.parse.unquote(path)
        if name not in self.files:
            return 404, {"message": "404 File Not Found"}
        return 200, {"file_path": name, "content": base64.b64encode(self.files[name].encode()).decode()}

    def add_commit(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        for action in body["actions"]:
            exists = action["file_path"] in self.files
            if (action["action"] == "create") == exists:
                return 400, {"message": "A file with this name already exists" if exists else "A file with this name doesn't exist"}
            self.files[action["file_path"]] = action["content"]
        self.commits.append(body)
        return 201, {"id": "c0ffee", "message": body["commit_message"]}


def serve_forge(forge: Forge) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            authorised = self.headers.get("Authorization", "").startswith("Bearer ") or self.headers.get("PRIVATE-TOKEN")
            status, payload = (
                (401, {"message": "Bad credentials"})
                if not authorised
                else forge.handle(method, self.path, json.loads(raw) if raw else None)
            )
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

        def do_PATCH(self) -> None:
            self._reply("PATCH")

        def do_PUT(self) -> None:
            self._reply("PUT")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    forge.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --------------------------------------------------------------------------- shell steps
@dataclass
class StepResult:
    name: str
    returncode: int
    stdout: str
    stderr: str


def fake_pip(bin_dir: Path, record: Path) -> None:
    """`pip install <dir>`: the tool is already installed in this interpreter; check what the recipe
    installs is a checkout of this repository (never a registry name) and record it."""
    script = bin_dir / "pip"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{record}"\n'
        '[ "$1" = install ] || exit 2\n'
        'for a in "$@"; do case "$a" in install|-*) ;; *) [ -f "$a/pyproject.toml" ] && grep -q \'name = "agora-reconciler"\' "$a/pyproject.toml" || '
        '{ echo "not a checkout of agora-reconciler: $a" >&2; exit 1; } ;; esac; done\n'
    )
    script.chmod(0o755)


def run_shell(script: str, *, shell: str, cwd: Path, env: dict[str, str], name: str) -> StepResult:
    path = cwd.parent / f".step-{abs(hash((name, script)))}"
    path.write_text(script)
    command = [sys.executable, str(path)] if shell == "python" else ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return StepResult(name, proc.returncode, proc.stdout, proc.stderr)


def base_env(bin_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, "PATH": f"{bin_dir}:{TOOL_BIN}:/usr/local/bin:/usr/bin:/bin", "CI": "true", **extra}


# --------------------------------------------------------------------------- GitHub Actions
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def gh_eval(expression: str, context: dict[str, Any]) -> Any:
    """The subset of GitHub's expression language the recipe uses: contexts, literals, ==, !=,
    &&, ||, !, success()/failure()/always()."""
    tokens = re.findall(r"'(?:[^']|'')*'|&&|\|\||==|!=|!|\(|\)|[A-Za-z_][\w\-]*(?:\.[\w\-]+)*(?:\(\))?|\d+", expression)
    python: list[str] = []
    for token in tokens:
        if token.startswith("'"):
            python.append(repr(token[1:-1].replace("''", "'")))
        elif token in ("&&", "||", "!"):
            python.append({"&&": " and ", "||": " or ", "!": " not "}[token])
        elif token in ("==", "!=", "(", ")") or token.isdigit():
            python.append(token)
        elif token in ("true", "false"):
            python.append(str(token == "true"))
        elif token.endswith("()"):
            python.append(
                repr({"success()": context["_status"] == "success", "failure()": context["_status"] == "failure", "always()": True}[token])
            )
        else:
            value: Any = context
            for part in token.split("."):
                value = value.get(part, "") if isinstance(value, dict) else ""
            python.append(repr(value))
    return eval("".join(python), {"__builtins__": {}})


def gh_substitute(text: str, context: dict[str, Any]) -> str:
    return _EXPR.sub(lambda m: str(gh_eval(m.group(1), context)), text)


@dataclass
class GitHubRun:
    """One workflow run: an event, a run id, the contexts, and the artifacts store shared by runs."""

    workflow: dict[str, Any]
    workspace: Path
    forge: Forge
    artifacts: dict[int, dict[str, dict[str, bytes]]]
    run_id: int
    event: str
    github: dict[str, Any]
    secrets: dict[str, str]
    variables: dict[str, str]
    bin_dir: Path
    results: list[StepResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def context(self, env: dict[str, str], steps: dict[str, Any], status: str) -> dict[str, Any]:
        github = {"event_name": self.event, "token": "ghs_test_token", "sha": self.github["sha"], **self.github}
        return {"github": github, "secrets": self.secrets, "vars": self.variables, "env": env, "steps": steps, "_status": status}

    def job_runs(self, job: str) -> bool:
        return bool(gh_eval(_EXPR.sub(lambda m: m.group(1), self.workflow["jobs"][job]["if"]), self.context({}, {}, "success")))

    def run_job(self, job_name: str) -> str:
        """Runs the job's steps; returns "success" or "failure" as the job's conclusion."""
        job = self.workflow["jobs"][job_name]
        assert self.job_runs(job_name), f"job {job_name} does not run on {self.event}"
        ctx = self.context({}, {}, "success")
        env = {k: gh_substitute(str(v), ctx) for k, v in self.workflow.get("env", {}).items()}
        summary = self.workspace.parent / f"summary-{self.run_id}.md"
        runner = {
            "GITHUB_API_URL": self.forge.url,
            "GITHUB_REPOSITORY": "acme/telephony",
            "GITHUB_SHA": self.github["sha"],
            "GITHUB_EVENT_NAME": self.event,
            "GITHUB_WORKFLOW_REF": "acme/telephony/.github/workflows/agora.yml@refs/heads/main",
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_ACTIONS": "true",
        }
        steps: dict[str, Any] = {}
        status = "success"
        for step in job["steps"]:
            name = step.get("name") or step.get("uses") or "step"
            ctx = self.context(env, steps, status)
            condition = step.get("if", "success()")
            if not gh_eval(_EXPR.sub(lambda m: m.group(1), str(condition)), ctx):
                self.skipped.append(name)
                continue
            outputs = self.workspace.parent / f"output-{self.run_id}-{len(self.results)}"
            outputs.write_text("")
            step_env = {**env, **{k: gh_substitute(str(v), ctx) for k, v in (step.get("env") or {}).items()}}
            if "uses" in step:
                result = self.action(step, ctx, name)
            else:
                full_env = base_env(self.bin_dir, {**runner, **step_env, "GITHUB_OUTPUT": str(outputs)})
                result = run_shell(
                    gh_substitute(step["run"], ctx), shell=step.get("shell", "bash"), cwd=self.workspace, env=full_env, name=name
                )
            self.results.append(result)
            if "id" in step:
                steps[step["id"]] = {"outputs": dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)}
            if result.returncode != 0:
                status = "failure"
        return status

    def action(self, step: dict[str, Any], ctx: dict[str, Any], name: str) -> StepResult:
        uses, given = step["uses"], {k: gh_substitute(str(v), ctx) for k, v in (step.get("with") or {}).items()}
        if uses.startswith("actions/checkout@"):
            if "repository" in given:  # the tool's own repository, checked out beside the workspace's files
                target = self.workspace / given["path"]
                if not target.exists():
                    target.symlink_to(ROOT, target_is_directory=True)
            return StepResult(name, 0, "", "")
        if uses.startswith("actions/setup-python@"):
            assert given.get("python-version"), "setup-python without a version"
            return StepResult(name, 0, "", "")
        if uses.startswith("actions/upload-artifact@"):
            source = self.workspace / given["path"]
            if not source.exists():
                return StepResult(name, 1, "", f"no file at {given['path']}")
            self.artifacts.setdefault(self.run_id, {})[given["name"]] = {source.name: source.read_bytes()}
            return StepResult(name, 0, "", "")
        if uses.startswith("actions/download-artifact@"):
            run_id = int(given.get("run-id") or self.run_id)
            files = self.artifacts.get(run_id, {}).get(given["name"])
            if files is None:
                return StepResult(name, 1, "", f"no artifact {given['name']} in run {run_id}")
            for file_name, data in files.items():
                (self.workspace / file_name).write_bytes(data)
            return StepResult(name, 0, "", "")
        raise AssertionError(f"the test runner does not know the action {uses}")


# --------------------------------------------------------------------------- GitLab CI
def gl_rule_matches(expression: str, variables: dict[str, str]) -> bool:
    """`$VAR == "x"`, `$A == $B`, `&&`, `||` (what the recipe uses)."""

    def term(text: str) -> str:
        text = text.strip()
        if text.startswith("$"):
            return variables.get(text[1:], "")
        return str(json.loads(text))

    return any(
        all(term(left) == term(right) for left, right in (part.split("==") for part in alternative.split("&&")))
        for alternative in expression.split("||")
    )


def gl_job_runs(pipeline: dict[str, Any], job: str, variables: dict[str, str]) -> bool:
    workflow = any(gl_rule_matches(rule["if"], variables) for rule in pipeline["workflow"]["rules"])
    return workflow and any(gl_rule_matches(rule["if"], variables) for rule in pipeline[job].get("rules", [{"if": '"a" == "a"'}]))


def gl_run_job(
    pipeline: dict[str, Any], job: str, *, workspace: Path, variables: dict[str, str], bin_dir: Path
) -> tuple[StepResult, StepResult | None]:
    """The job's script in one shell (as a runner does), then its after_script in another."""
    assert gl_job_runs(pipeline, job, variables), f"job {job} does not run with {variables.get('CI_PIPELINE_SOURCE')}"
    env = base_env(bin_dir, {**{k: str(v) for k, v in pipeline.get("variables", {}).items()}, **variables})
    spec = pipeline[job]
    main = run_shell("\n".join(spec["script"]), shell="bash", cwd=workspace, env=env, name=job)
    after = None
    if spec.get("after_script"):
        after = run_shell("\n".join(spec["after_script"]), shell="bash", cwd=workspace, env=env, name=f"{job} (after_script)")
    return main, after


def copy_quickstart(workspace: Path, config_dir: str) -> Path:
    target = workspace / config_dir
    target.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "quickstart" / "agora.yaml", target / "agora.yaml")
    return target
