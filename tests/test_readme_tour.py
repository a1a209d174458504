"""README.md's tour matches the tool: its commands run on a copy of the quick start, and the output
(stdout and stderr, in order) is compared with the README's text line for line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tour() -> list[tuple[str, str]]:
    """(command, expected output) pairs of the ```console block in the tour section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## A tour", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block, "the tour has a ```console block"
    steps: list[tuple[str, str]] = []
    for line in block.group(1).splitlines(keepends=True):
        if line.startswith("$ "):
            steps.append((line[2:].rstrip("\n"), ""))
        else:
            command, output = steps[-1]
            steps[-1] = (command, output + line)
    return steps


def quick_start_command() -> str:
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```sh\n(.*?)\n", readme.split("## Quick start", 1)[1], re.S)
    assert first
    return first.group(1).split("&&", 1)[1].strip()  # "pip install ." is this checkout, installed already


def test_the_readme_tour_matches_the_tools_output(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "examples" / "quickstart", tmp_path / "examples" / "quickstart", ignore=shutil.ignore_patterns(".agora-reconciler")
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "AGORA_ENDPOINT", "AGORA_RECONCILER_STATE", "AGORA_APP_ID")}
    env.update(PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}")

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )

    setup = sh(quick_start_command())
    assert setup.returncode == 0, setup.stdout
    steps = tour()
    assert len(steps) >= 5
    for command, expected in steps:
        assert sh(command).stdout == expected, f"README tour: $ {command}"
