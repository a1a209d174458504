"""Fuzzing the two loaders that read untrusted files: the YAML declaration and saved plan files.

Hypothesis feeds random bytes and mutations of valid inputs; the only acceptable failure is our
error type (`ConfigError`, `PlanFileError`), with no hang and bounded memory. When the coverage-
guided fuzzer atheris is installed (it is in the test extra where it has a wheel), a short
bounded run of each loader is added.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import config, reconcile
from reconciler.errors import ConfigError, PlanFileError
from reconciler.model import Address
from reconciler.plan import Action, Change, FieldChange, Plan
from reconciler.render import render_json
from reconciler.secrets import REDACTOR

VALID_PLAN = render_json(
    Plan(
        changes=(
            Change(
                Address("phone_number", "+14155550100"),
                Action.UPDATE,
                "binding",
                False,
                (FieldChange("inbound_config.pipeline_id", "a", "b"),),
            ),
            Change(Address("agent", "lobby"), Action.RESTART, "FAILED"),
        ),
        created_at="2026-01-01T00:00:00Z",
    )
)
VALID_YAML = (Path(__file__).resolve().parents[2] / "examples" / "team-account" / "agents.yaml").read_text()


def _load_plan(tmp: Path, data: bytes) -> tuple[Path, Plan | PlanFileError]:
    """Load bytes as a plan file: the plan, or the (only acceptable) error."""
    path = tmp / "plan.json"
    path.write_bytes(data)
    try:
        return path, reconcile.load_plan_file(str(path), config.validate_plan_document)
    except PlanFileError as exc:
        return path, exc


def _check(path: Path, outcome: Plan | PlanFileError) -> None:
    if isinstance(outcome, PlanFileError):
        assert str(path) in outcome.message, "the error names the file"
    else:
        assert all(isinstance(c.action, Action) for c in outcome.changes)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=3000))
def test_plan_loader_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path, outcome = _load_plan(tmp_path_factory.mktemp("fuzz"), data)
    assert isinstance(outcome, (Plan, PlanFileError))
    _check(path, outcome)


def _walk(doc: Any, path: str) -> Any:
    """The node at a dotted path, or None when an earlier mutation removed it."""
    target = doc
    for part in filter(None, path.split(".")):
        if isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        elif isinstance(target, dict) and part in target:
            target = target[part]
        else:
            return None
    return target


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_plan_loader_mutations(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    doc = json.loads(VALID_PLAN)
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(["", "summary", "changes", "changes.0", "changes.0.fields", "changes.0.fields.0", "unmanaged"]))
        target = _walk(doc, path)
        value = data.draw(
            st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just([]), st.just({}), st.just([{}]), st.just("create"))
        )
        if isinstance(target, dict):
            key = data.draw(st.sampled_from([*target.keys(), "x"])) if target else "x"
            if data.draw(st.booleans()):
                target.pop(key, None)
            else:
                target[key] = value
        elif isinstance(target, list):
            target.append(value)
    path, outcome = _load_plan(tmp_path_factory.mktemp("fuzz"), json.dumps(doc).encode())
    assert isinstance(outcome, (Plan, PlanFileError))
    _check(path, outcome)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2000), st.integers(0, 1000))
def test_yaml_loader_splices_of_random_bytes(data: bytes, at: int) -> None:
    text = VALID_YAML[:at] + data.decode("utf-8", errors="replace") + VALID_YAML[at:]
    try:
        value = config.parse_document(text, "fuzz.yaml", {})
    except ConfigError as exc:
        assert exc.diagnostics and all(d.file == "fuzz.yaml" and d.line >= 1 and d.col >= 1 for d in exc.diagnostics)
    else:
        assert value is None or isinstance(value, dict)
    finally:
        REDACTOR.clear()


def test_deep_nesting_and_huge_scalars_are_bounded() -> None:
    tracemalloc.start()
    for text in ("[" * 100_000, "a: " + "{" * 50_000, "x: " + "9" * 200_000, "- " * 20_000 + "x"):
        with pytest.raises(ConfigError):
            config.parse_document("version: 1\n" + text if not text.startswith("-") else text, "deep.yaml", {})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 200 * 1024 * 1024


ATHERIS_HARNESS = textwrap.dedent(
    """
    import sys, atheris
    with atheris.instrument_imports():
        from reconciler import config
        from reconciler.errors import ConfigError
    def one(data):
        try:
            config.parse_document(data.decode("utf-8", "replace"), "fuzz.yaml", {})
        except ConfigError:
            pass
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
    """
)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris has no wheel for this Python")
def test_atheris_yaml_loader(tmp_path: Path) -> None:
    harness = tmp_path / "fuzz_yaml.py"
    harness.write_text(ATHERIS_HARNESS)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed.yaml").write_text(VALID_YAML)
    result = subprocess.run(
        [sys.executable, str(harness), str(corpus), "-runs=3000", "-max_len=4096", "-rss_limit_mb=1024", "-timeout=10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 3000 runs" in result.stderr
