"""The wheel: schemas ship inside it and an installed copy finds them; the entry points work."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_install_finds_its_schemas(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("agora_reconciler-*.whl"))
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    # The wheel's dependencies come from this (outer) environment: a path file lists its site
    # directories. Path files found there are not run, so the editable install stays out of it.
    inner_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True
    )
    outer_sites = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(inner_site.stdout.strip(), "outer-dependencies.pth").write_text("\n".join(sorted(outer_sites)) + "\n")
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import reconciler, reconciler.config as c; print(reconciler.__file__); print(c.schema_dir()); print(c.load_schema('config')['title'])",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert probe.returncode == 0, probe.stderr
    module, schema_dir, title = probe.stdout.splitlines()
    assert module == str(target / "reconciler" / "__init__.py"), "the installed copy, not the source tree"
    assert schema_dir == str(target / "reconciler" / "schemas") and title == "agora-reconciler configuration"


def test_module_entry_point_and_version() -> None:
    result = subprocess.run([sys.executable, "-m", "reconciler", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "agora-reconciler, version 0.1.0"


def test_usage_errors_exit_1() -> None:
    result = subprocess.run([sys.executable, "-m", "reconciler", "plan", "--no-such-flag"], capture_output=True, text=True)
    assert result.returncode == 1 and "No such option '--no-such-flag'" in result.stderr


def test_validate_and_help_import_no_http_stack() -> None:
    probe = (
        "import sys\n"
        "from reconciler.cli import main\n"
        "for argv in (['validate', 'examples/quickstart'], ['--help']):\n"
        "    sys.argv = ['agora-reconciler', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3', 'psycopg', 'deepdiff')"
        " or m.startswith(('reconciler.emulator', 'reconciler.client'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_every_command_with_its_own_short_help() -> None:
    import click

    from reconciler.cli import COMMANDS, cli

    ctx = click.Context(cli)
    for name, (_, _, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.get_short_help_str(limit=1000) == short, name
