"""A CLI that teaches: help for every command, -q, colour rules, automation mode under CI, drift
wording, resumed starts, bounded refusal lists, where a missing ledger or store was looked for,
and a self-contained schema."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from reconciler.cli import cli
from reconciler.cli.common import use_color
from reconciler.cli.planning import _Interrupts, _Progress
from reconciler.executor import ChangeResult
from reconciler.model import Address
from reconciler.plan import Action, Change, Plan

from .conftest import Emulator
from .e2e import Project, number_spec

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree, loading the lazily imported ones as `agora-reconciler NAME` would."""
    found: list[tuple[tuple[str, ...], click.Command]] = [(prefix, group)]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


@pytest.mark.parametrize("path,command", all_commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_has_a_purpose_an_example_and_help_for_every_option(path: tuple[str, ...], command: click.Command, run: Any) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0
    text = result.stdout
    purpose = (command.help or "").strip().splitlines()[0]
    assert purpose.endswith(".") and len(purpose) <= 100, f"{path}: one line of purpose, got {purpose!r}"
    assert purpose in " ".join(text.split())
    assert "Example" in text and "agora-reconciler " in text.split("Example", 1)[1], f"{path}: no example"
    if any(isinstance(p, click.Argument) and p.name == "paths" for p in command.params):
        flat = " ".join(text.split())
        assert "PATHS" in flat and "folder" in flat and "merged" in flat and "default: agora.yaml" in flat, f"{path}: PATHS not explained"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help text"


def test_the_command_list_shows_each_commands_own_purpose() -> None:
    """`--help` lists commands without importing them (COMMANDS); it must say what each one says."""
    from reconciler.cli import COMMANDS

    ctx = click.Context(cli)
    for name, (_, _, purpose) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and purpose == (command.help or "").strip().splitlines()[0], name


@pytest.mark.parametrize(
    "path,command",
    [c for c in all_commands() if not isinstance(c[1], click.Group)],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_every_command_takes_quiet(path: tuple[str, ...], command: click.Command) -> None:
    assert any("-q" in getattr(p, "opts", ()) for p in command.params), f"{' '.join(path)} has no -q"


def test_quiet_prints_only_errors(project: Project, run: Any, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = str(project.path)
    saved = str(tmp_path / "plan.json")
    for args in (
        ("validate", config),
        ("plan", config, "--out", saved),
        ("apply", config, "--plan", saved),
        ("apply", config, "--auto-approve"),
        ("drift", config),
        ("graph", config),
        ("export",),
        ("schema",),
        ("state", "list", "--state", str(project.state)),
        ("state", "forget", "phone_number/+14155550101", "--state", str(project.state)),
    ):
        result = run(*args, "-q")
        assert result.exit_code == 0 and result.stderr == "", (args, result.stderr)
    monkeypatch.chdir(tmp_path)
    assert run("state", "list", "-q").stderr == ""
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 2\n")
    failed = run("validate", str(broken), "-q")
    assert failed.exit_code == 1 and f"{broken}:1:10: error:" in failed.stderr and "Invalid" in failed.stderr


def test_emulator_serve_quiet_prints_only_errors(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0", "-q", "--data", str(tmp_path / "store.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AGORA_CUSTOMER_ID": "quiet-id", "AGORA_CUSTOMER_SECRET": "quiet-secret-value-1"},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:")
    proc.terminate()
    out, errors = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "" and errors == ""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = subprocess.run(
            [sys.executable, "-m", "reconciler", "emulator", "serve", "-q", "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "AGORA_CUSTOMER_ID": "quiet-id", "AGORA_CUSTOMER_SECRET": "quiet-secret-value-1"},
        )
    assert busy.returncode == 1 and busy.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "flag", "colour"),
    [
        ({}, False, True),
        ({"NO_COLOR": ""}, False, True),  # only a non-empty NO_COLOR counts
        ({"NO_COLOR": "1"}, False, False),
        ({"TERM": "dumb"}, False, False),
        ({"CI": "true"}, False, False),
        ({"CI": "false"}, False, True),
        ({}, True, False),
    ],
)
def test_colour_rules(env: dict[str, str], flag: bool, colour: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("NO_COLOR", "TERM", "CI"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert use_color(flag, Tty()) is colour
    assert use_color(False, io.StringIO()) is False  # never when not a terminal


def on_a_terminal(args: list[str], env: dict[str, str], answer: bytes | None = None) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal (stdin, stdout and stderr), as a person would."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", *args], stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        seen += chunk
        if answer is not None and b"[y/N]" in seen:
            os.write(main, answer)
            answer = None
    try:
        while True:
            chunk = os.read(main, 4096)
            if not chunk:
                break
            seen += chunk
    except OSError:
        pass
    os.close(main)
    return proc.wait(timeout=30), seen.decode(errors="replace")


def test_automation_mode_never_prompts_colours_draws_a_bar_or_hints(
    project: Project, emu: Emulator, api_env: dict[str, str], tmp_path: Path
) -> None:
    project.numbers = [number_spec(f"+1415555{i:04d}") for i in range(4)]
    project.write()
    env = {**os.environ, **api_env, **project.env(), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    code, text = on_a_terminal(["plan", str(project.path)], env)
    assert code == 0 and "\033[" in text, "colour on a terminal (the control case)"
    ci = {**env, "CI": "true"}
    code, text = on_a_terminal(["plan", str(project.path), "--out", str(tmp_path / "p.json")], ci)
    assert code == 0 and "\033[" not in text and "Saved the plan to" in text and "Apply it with" not in text
    code, text = on_a_terminal(["apply", str(project.path)], ci)
    assert code == 1 and "CI is set, so apply does not ask" in text and "[y/N]" not in text
    assert emu.mutating() == []
    code, text = on_a_terminal(["apply", str(project.path), "--auto-approve"], ci)
    assert code == 0 and "Applying" not in text and "phone_number/+14155550000: created" in text and "\033[" not in text


def test_drift_speaks_of_drift(project: Project, run: Any, emu: Emulator) -> None:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    agent_id = project.ledger()["resources"]["agent/concierge"]["agent_id"]
    emu.admin("POST", f"agents/{agent_id}/crash")
    for fmt in ("text", "markdown"):
        result = run("drift", str(project.path), "--format", fmt)
        assert result.exit_code == 2
        assert "will perform" not in result.stdout and "Review before merging" not in result.stdout and "Plan:" not in result.stdout
        assert (
            "Drift: 1 resource(s) differ; apply would: 0 to create, 0 to update, 0 to replace, 0 to delete, 1 to restart." in result.stdout
        )
    assert "The account has drifted from the configuration:" in run("drift", str(project.path)).stdout
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert run("drift", str(project.path)).stdout.startswith("No drift. The account matches the configuration.")


def test_a_resumed_agent_start_is_reported_as_resumed(project: Project, run: Any, emu: Emulator) -> None:
    emu.fault(method="POST", path="/join$", status=503, count=10)  # journaled as pending, never started
    first = run("apply", str(project.path), "--auto-approve")
    assert first.exit_code == 1 and project.ledger()["resources"]["agent/concierge"].get("pending")
    emu.admin("DELETE", "faults")
    second = run("apply", str(project.path), "--auto-approve")
    assert second.exit_code == 0, second.output
    assert "agent/concierge: resumed" in second.stderr and "Apply complete: 1 resumed." in second.stderr
    assert "created" not in second.stderr
    assert len(emu.agents("app-e2e")) == 1


def test_an_interrupted_progress_bar_stops_where_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Tty()
    monkeypatch.setattr(sys, "stderr", terminal)
    changes = [Change(Address("phone_number", f"+1415555{i:04d}"), Action.CREATE, "r") for i in range(10)]
    progress = _Progress(quiet=False)
    progress.start(Plan(changes=tuple(changes)))
    assert progress.bar is not None
    for index, change in enumerate(changes):
        progress(ChangeResult(change, ok=index < 3, skipped=index >= 3))
    assert progress.bar.pos == 3
    interrupts = _Interrupts(threading.Event(), progress)
    interrupts.running = True
    interrupts.handler(signal.SIGINT, None)  # the first Ctrl-C: its message starts below the bar
    progress.finish()
    text = terminal.getvalue()
    assert " 30%" in text and "100%" not in text
    assert re.search(r" 30%[^\n]*\nInterrupted: finishing the changes in flight", text), text


def test_a_refusal_lists_at_most_20_resources_and_counts_the_rest(project: Project, run: Any, emu: Emulator) -> None:
    project.numbers = [number_spec(f"+1415555{i:04d}") for i in range(25)]
    project.agents = []
    project.write()
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    for spec in project.numbers:
        spec["label"] = "renamed"
    project.write()
    refused = run("apply", str(project.path), "--auto-approve", "--force")
    assert refused.exit_code == 1
    listed = [line for line in refused.stderr.splitlines() if line.startswith("  - ")]
    assert len(listed) == 21 and listed[-1] == "  - ... and 5 more" and "replacing 25 phone number(s)" in refused.stderr


def test_state_list_says_where_it_looked(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("state", "list")
    assert result.exit_code == 0 and result.stdout == ""
    expected = (
        f"No ledger entries at {tmp_path.resolve()}/.agora-reconciler/state.json (no agora.yaml in this folder and no -c given, "
        "so the default location): nothing is owned yet, or this is not the configuration's ledger (pass -c CONFIG or --state FILE).\n"
    )
    assert result.stderr == expected
    shown = run("state", "show", "agent/x")
    assert shown.exit_code == 1 and f"not in the ledger at {tmp_path.resolve()}/.agora-reconciler/state.json" in shown.stderr


def test_export_finds_the_local_store_next_to_the_ledger_or_says_where_it_looked(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AGORA_ENDPOINT", "AGORA_RECONCILER_STATE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    missing = run("export", "--endpoint", "local")
    assert missing.exit_code == 1
    assert f"no local API store at {tmp_path.resolve()}/.agora-reconciler/local-api.json" in missing.stderr
    assert "no agora.yaml here and no -c given" in missing.stderr
    quickstart = tmp_path / "qs"
    shutil.copytree(QUICKSTART, quickstart)
    assert run("apply", str(quickstart), "--auto-approve").exit_code == 0
    by_config = run("export", "-c", str(quickstart))
    assert by_config.exit_code == 0, by_config.stderr
    assert [n["phone_number"] for n in yaml.safe_load(by_config.stdout)["phone_numbers"]] == ["+14155550100", "+14155550101"]
    monkeypatch.chdir(quickstart)  # from the configuration's folder, like plan: no flag needed
    assert run("export").stdout == by_config.stdout


def test_the_config_schema_is_self_contained(run: Any) -> None:
    schema = json.loads(run("schema").stdout)
    refs = [v for v in _values(schema, "$ref")]
    assert refs and all(r.startswith("#/") for r in refs), refs
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)  # no registry: nothing outside this document
    quickstart = yaml.safe_load((QUICKSTART / "agora.yaml").read_text())
    assert list(validator.iter_errors(quickstart)) == []
    quickstart["phone_numbers"][0]["inbound_config"]["pipline_id"] = "typo"
    quickstart["agents"][0]["properties"]["idle_timeout"] = "never"
    errors = sorted("/".join(map(str, e.absolute_path)) for e in validator.iter_errors(quickstart))
    assert errors == ["agents/0/properties/idle_timeout", "phone_numbers/0/inbound_config"]
    for name in ("phone_number", "agent", "plan"):
        assert all(r.startswith("#/") for r in _values(json.loads(run("schema", "--name", name).stdout), "$ref"))


def _values(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [x for v in node.values() for x in _values(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _values(v, key)]
    return []
