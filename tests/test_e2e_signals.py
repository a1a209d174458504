"""Signals and silence end to end (issue 10, items 19 and 20): Ctrl-C at the confirmation prompt on a
real terminal, SIGTERM during an apply, and an API that accepts connections and never answers."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Emulator, run_process
from .e2e import Project, number_spec
from .reliability import crashpoint

ROOT = Path(__file__).resolve().parent.parent


def _read_until(fd: int, needle: bytes, seconds: float) -> bytes:
    """What the pty shows until `needle` appears, the child closes its side (EOF), or `seconds` pass
    (a generous bound for a hung child, never part of a verdict)."""
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every copy of the child's side is closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


def _wait(pid: int, seconds: float) -> int | None:
    """The exit code of `pid`, or None if it is still running after `seconds` (then it is killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.parametrize("key", [b"\x03", b"sigterm"])
def test_ctrl_c_at_the_prompt_aborts_at_once(project: Project, emu: Emulator, api_env: dict[str, str], key: bytes) -> None:
    """On a real terminal (the child's controlling tty), Ctrl-C typed at the prompt: exit 130, nothing changed.
    SIGTERM at the prompt likewise: exit 143."""
    env = {**os.environ, **api_env, **project.env()}
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execve(sys.executable, [sys.executable, "-m", "reconciler", "apply", str(project.path)], env)
    try:
        seen = _read_until(fd, b"Apply these 3 changes? [y/N]", 60)
        assert b"Apply these 3 changes?" in seen, seen.decode(errors="replace")
        if key == b"sigterm":
            os.kill(pid, signal.SIGTERM)
        else:
            os.write(fd, key)  # the terminal turns it into SIGINT for the foreground process
        seen += _read_until(fd, b"\x00never", 120)  # everything the child writes, up to its exit (EOF)
        code = _wait(pid, 120)
    finally:
        os.close(fd)
    assert code == (130 if key == b"\x03" else 143), seen.decode(errors="replace")
    assert b"nothing was changed" in seen
    assert emu.mutating() == [] and not project.state.exists()


def test_sigterm_during_apply_finishes_in_flight_changes_and_saves_the_ledger(
    project: Project, emu: Emulator, api_env: dict[str, str]
) -> None:
    project.numbers = [number_spec(f"+1415667{i:04d}") for i in range(30)]
    project.write()
    env = {**api_env, **project.env()}
    # SIGTERM at the start of the 6th change, which then waits for the handler: a definite point mid-apply
    proc = crashpoint.spawn(
        "term:reconciler.executor:Executor._apply:6", "apply", str(project.path), "--auto-approve", "--parallelism", "1", env=env
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Interrupted: finishing the changes in flight" in stderr
    owned = {k for k in project.ledger()["resources"] if k.startswith("phone_number/")}
    live = {f"phone_number/{n}" for n in emu.numbers()}
    assert owned == live and 0 < len(owned) < 30, "every change that was made is in the ledger"
    rerun = run_process("apply", str(project.path), "--auto-approve", env=env)
    assert rerun.exit_code == 0, rerun.stderr
    assert len(emu.numbers()) == 30


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback server that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("command", ["plan", "drift", "apply"])
def test_a_silent_api_ends_in_a_clear_error_naming_the_endpoint(project: Project, silent_url: str, command: str) -> None:
    env = {"AGORA_ENDPOINT": silent_url, **project.env()}
    extra = ["--auto-approve"] if command == "apply" else []
    result = run_process(command, str(project.path), "--timeout", "0.3", *extra, env=env, timeout=60)
    assert result.exit_code == 1, result.stderr
    assert "Error: cannot read live state: gave up after" in result.stderr
    assert f"no answer from {silent_url} " in result.stderr
    assert not project.state.exists()


def test_a_bad_timeout_is_a_usage_error(project: Project) -> None:
    result = run_process("plan", str(project.path), "--timeout", "soon")
    assert result.exit_code == 1 and "'soon' is not a timeout" in result.stderr
