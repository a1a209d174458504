"""Finding the configuration files: the files named, or every *.yaml / *.yml in a named folder
(sorted), with links that lead nowhere (dangling or looping) reported as errors naming them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import Diagnostic
from .reader import DEFAULT_PATH


def _broken_link(path: Path) -> str | None:
    """Why `path`, a symbolic link, leads to no file (dangling or looping), or None if it does."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return f"the link {path} loops (it leads back to itself); fix or remove it"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"the link {path} loops (it leads back to itself); fix or remove it"
        return f"the link {path} points to {os.readlink(path)}, which does not exist; fix or remove it"
    return None


def discover(paths: Iterable[str]) -> tuple[list[Path], list[Diagnostic]]:
    """Files named, or every *.yaml / *.yml in a named folder (sorted). A YAML link that leads
    nowhere (dangling or looping) is an error naming it: silently skipping a file would turn its
    resources into planned deletes."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        broken = _broken_link(path)
        if broken:
            problems.append(Diagnostic(str(path), 1, 1, broken))
        elif path.is_dir():
            found, before = [], len(problems)
            for entry in sorted(path.iterdir()):
                if entry.suffix not in (".yaml", ".yml"):
                    continue
                broken = _broken_link(entry)
                if broken:
                    problems.append(Diagnostic(str(entry), 1, 1, broken))
                elif entry.is_file():
                    found.append(entry)
            if not found and len(problems) == before:
                problems.append(Diagnostic(str(path), 1, 1, "the folder has no *.yaml or *.yml files"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            hint = " (pass a file or folder, or create agora.yaml)" if raw == DEFAULT_PATH else ""
            problems.append(Diagnostic(str(path), 1, 1, f"no such file or folder{hint}"))
    return files, problems
