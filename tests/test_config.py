"""Configuration: broken documents with exact messages, examples, interpolation, schemas, fuzzing."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import config
from reconciler.errors import ConfigError
from reconciler.secrets import REDACTOR, redact

from .conftest import Emulator, write

ROOT = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).parent / "data" / "broken"
EXPECTED = json.loads((BROKEN / "expected.json").read_text())
NOT_CONFIG = {"ci", "kubernetes", "grafana"}  # recipes and manifests, tested by their own tests
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p.is_dir() or p.suffix in (".yaml", ".yml")) and p.name not in NOT_CONFIG)

VALID = """
version: 1
settings:
  app_id: app1
phone_numbers:
  - phone_number: "+14155550100"
    provider: byo
    label: Sales
    inbound_config: {allowed_addresses: [10.0.0.0/8], pipeline_id: pl_demo_sales}
    outbound_config: {address: sip.example.com, transport: tls, prefix: "9"}
agents:
  - name: lobby
    preset: p1
    properties:
      channel: lobby
      token: ${TOKEN:-x}
      agent_rtc_uid: "1"
      remote_rtc_uids: ["*"]
      idle_timeout: 0
      llm: {params: {model: m, max_tokens: 10}}
"""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_document_reports_exact_errors(name: str) -> None:
    path = BROKEN / f"{name}.yaml"
    result = config.check([str(path)], {"TOKEN": "x"})
    got = [f"{e.line}:{e.col}: {e.message}" for e in result.errors]
    assert got == [line.replace("{file}", str(path)) for line in EXPECTED[name]]
    assert all(e.file == str(path) for e in result.errors)
    assert result.desired is None


def test_every_broken_document_has_an_expectation() -> None:
    assert sorted(p.stem for p in BROKEN.glob("*.yaml")) == sorted(EXPECTED)


def test_billion_laughs_is_refused_with_little_memory() -> None:
    tracemalloc.start()
    with pytest.raises(ConfigError, match="aliases expand"):
        config.load([str(BROKEN / "billion-laughs.yaml")], {})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    result = config.check([str(example)], {})
    assert result.errors == [] and result.desired is not None
    files = [example] if example.is_file() else sorted(example.glob("*.y*ml"))
    assert all(f.read_text().startswith("# yaml-language-server: $schema=") for f in files)


def test_loads_desired_with_locations_and_secrets(tmp_path: Path) -> None:
    path = write(tmp_path / "agora.yaml", VALID)
    desired = config.load([str(path)], {"TOKEN": "rtc-token-value-123"})
    number = desired.phone_numbers[0]
    assert number.inbound_pipeline_id == "pl_demo_sales" and number.inbound_config == {"allowed_addresses": ["10.0.0.0/8"]}
    assert (number.location.line, number.location.col) == (5, 5)
    assert number.locations["outbound_config.transport"].line == 9
    agent = desired.agents[0]
    assert agent.app_id == "app1" and agent.properties["token"] == "rtc-token-value-123"
    assert agent.secrets == {"properties.token": "${TOKEN}"}
    assert redact("token is rtc-token-value-123") == "token is ***"


def test_locations_outlive_the_parsed_document(tmp_path: Path) -> None:
    """Once the resources are built, the parsed values and container positions are dropped (memory);
    every position asked for later, of a container, a value or a key, comes out as before."""
    path = write(tmp_path / "agora.yaml", VALID)
    desired = config.load([str(path)], {"TOKEN": "rtc-token-value-123"})
    number, agent = desired.phone_numbers[0], desired.agents[0]
    doc = number.locations._doc  # type: ignore[attr-defined]
    assert doc.value is None and doc.positions == {}
    assert (number.locations["inbound_config"].line, number.locations["outbound_config.transport"].line) == (8, 9)
    assert number.locations["inbound_config.allowed_addresses[0]"].line == 8
    assert "outbound_config.transport" in set(number.locations) and agent.locations["properties.token"].line > 9
    assert doc.where(("phone_numbers", 0)).line == 5 and doc.key_where(("phone_numbers", 0, "label")) is not None


def test_the_text_is_not_held_and_a_file_changed_since_gives_no_wrong_position(tmp_path: Path) -> None:
    """The declaration's text is read again for a position asked for later (megabytes are not held
    at account scale), and only when it is still the text that was loaded: once the file changed,
    a value's position is not known (the resource's own is kept), never a wrong line."""
    path = write(tmp_path / "agora.yaml", VALID)
    desired = config.load([str(path)], {"TOKEN": "rtc-token-value-123"})
    number = desired.phone_numbers[0]
    doc = number.locations._doc  # type: ignore[attr-defined]
    assert not any(isinstance(part, str) and "phone_numbers" in part for part in doc.source or ()), "no text held"
    before = number.location
    path.write_text("# a line pushes every value down\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert "outbound_config.transport" not in number.locations and dict(number.locations) == {}
    assert number.location == before and before.line == 5, "the resource's own position was kept"


def test_interpolation_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml",
        """
        version: 1
        settings: {app_id: "${APP:-fallback}"}
        phone_numbers:
          - phone_number: "+14155550100"
            provider: byo
            label: "costs $$5 ${SUFFIX}"
            outbound_config: {address: "${TRUNK:?the SIP trunk address}"}
        """,
    )
    desired = config.load([str(path)], {"SUFFIX": "a call", "TRUNK": "bob:pw-123456@sip.example.com"})
    number = desired.phone_numbers[0]
    assert desired.settings.app_id == "fallback"
    assert number.label == "costs $5 a call"
    assert number.secrets == {"label": "costs $$5 ${SUFFIX}", "outbound_config.address": "${TRUNK}"}
    with pytest.raises(ConfigError, match="TRUNK is not set: the SIP trunk address"):
        config.load([str(path)], {"SUFFIX": "x"})


def test_folder_merges_files_and_reports_duplicates_across_files(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        'version: 1\nsettings: {app_id: x}\nphone_numbers:\n  - {phone_number: "+14155550100", provider: byo, label: a}\n',
    )
    write(tmp_path / "b.yml", 'version: 1\nphone_numbers:\n  - {phone_number: "+14155550101", provider: byo, label: b}\n')
    write(tmp_path / "ignored.txt", "not yaml")
    desired = config.load([str(tmp_path)], {})
    assert [n.phone_number for n in desired.phone_numbers] == ["+14155550100", "+14155550101"]
    write(
        tmp_path / "c.yaml",
        'version: 1\nsettings: {app_id: y}\nphone_numbers:\n  - {phone_number: "+14155550100", provider: byo, label: c}\n',
    )
    result = config.check([str(tmp_path)], {})
    messages = [str(e) for e in result.errors]
    assert messages == [
        f"{tmp_path / 'c.yaml'}:2:12: settings.app_id is declared twice: here and at {tmp_path / 'a.yaml'}:2:12",
        f"{tmp_path / 'c.yaml'}:4:5: phone number +14155550100 is declared twice: here and at {tmp_path / 'a.yaml'}:4:5",
    ]


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    result = config.check([str(tmp_path / "nope.yaml"), str(tmp_path)], {})
    assert sorted(e.message for e in result.errors) == ["no such file or folder", "the folder has no *.yaml or *.yml files"]


def test_empty_file_declares_nothing_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.yaml", "")
    result = config.check([str(path)], {})
    assert result.errors == [] and result.desired is not None and result.desired.phone_numbers == ()
    assert [w.message for w in result.warnings] == ["the file is empty: it declares nothing"]


def test_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.yaml",
        """
        version: 1
        settings: {app_id: app1, prune: true}
        agents:
          - name: short-lived
            preset: p
            properties:
              channel: c
              token: literal-token-abcdef
              agent_rtc_uid: "1"
              remote_rtc_uids: ["*"]
              tts: {vendor: microsoft, params: {key: literal-azure-key-123}}
        """,
    )
    result = config.check([str(path)], {})
    assert result.errors == []
    assert [f"{w.line}:{w.col}: {w.message}" for w in result.warnings] == [
        "2:26: prune: true with no phone numbers declared: apply would delete every live number (the safety gate asks for --force)",
        "6:5: agent 'short-lived' has idle_timeout 30 (the default): it exits that long after users leave and will be restarted again and again; set idle_timeout: 0 for a long-running agent",
        "8:14: agents[0].properties.token is a literal secret in the file; use ${VAR} interpolation instead",
        "11:46: agents[0].properties.tts.params.key is a literal secret in the file; use ${VAR} interpolation instead",
    ]
    assert "literal-azure-key-123" not in redact("key literal-azure-key-123")


# --------------------------------------------------------------------------- schemas
@pytest.mark.parametrize("name", ["config", "phone_number", "agent", "plan"])
def test_schemas_are_valid_draft_2020_12_with_descriptions(name: str) -> None:
    schema = config.load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"{name}.schema.json")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                assert isinstance(sub, dict) and sub.get("description"), f"{name}: {where}.{key} has no description"
                walk(sub, f"{where}.{key}")
            for key in ("items", "additionalProperties"):
                if isinstance(node.get(key), dict):
                    walk(node[key], where)

    walk(schema, name)


def test_schema_command_prints_the_config_schema(run: Any) -> None:
    result = run("schema")
    assert result.exit_code == 0 and json.loads(result.stdout) == config.bundled_schema("config")
    assert json.loads(run("schema", "--name", "plan").stdout)["title"] == "agora-reconciler plan"


# --------------------------------------------------------------------------- the validate command
def test_validate_formats_and_exit_codes(run: Any, tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", VALID)
    ok = run("validate", str(good))
    assert ok.exit_code == 0 and "Valid: 1 phone number(s), 1 agent(s) in 1 file(s)." in ok.stderr
    bad = str(BROKEN / "misspelt-key.yaml")
    text = run("validate", bad)
    assert text.exit_code == 1
    assert f"{bad}:5:5: error: unknown key 'lable' in phone_numbers[0]; did you mean 'label'?" in text.stderr
    doc = json.loads(run("validate", bad, "--format", "json").stdout)
    assert doc["valid"] is False and doc["errors"][1] == {
        "file": bad,
        "line": 5,
        "col": 5,
        "message": "unknown key 'lable' in phone_numbers[0]; did you mean 'label'?",
        "path": "phone_numbers[0].lable",
    }
    github = run("validate", bad, "--format", "github")
    assert (
        github.stdout.splitlines()[1] == f"::error file={bad},line=5,col=5::unknown key 'lable' in phone_numbers[0]; did you mean 'label'?"
    )


def test_validate_github_caps_annotations_at_ten(run: Any, tmp_path: Path) -> None:
    items = "".join(f'  - {{phone_number: "+1415555{i:04d}", provider: nope, label: x}}\n' for i in range(12))
    path = write(tmp_path / "many.yaml", "version: 1\nphone_numbers:\n" + items)
    lines = run("validate", str(path), "--format", "github").stdout.splitlines()
    assert len(lines) == 11 and lines[-1] == "::error::2 more error(s) not annotated; run agora-reconciler validate for all of them"


def test_invalid_config_sends_nothing(run: Any, api_env: dict[str, str], emu: Emulator) -> None:
    result = run("plan", str(BROKEN / "misspelt-key.yaml"))
    assert result.exit_code == 1 and "Error: 2 errors in the configuration" in result.stderr
    assert emu.requests() == []


# --------------------------------------------------------------------------- fuzzing
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_only_raise_config_error(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        value = config.parse_document(text, "fuzz.yaml", {})
    except ConfigError as exc:
        assert exc.diagnostics and all(d.line >= 1 and d.col >= 1 for d in exc.diagnostics)
    else:
        assert value is None or isinstance(value, dict), "a document is a mapping or empty"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_of_a_valid_document_only_raise_config_error(data: st.DataObject) -> None:
    lines = VALID.strip("\n").splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "garble", "swap", "alias"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        elif op == "garble":
            lines[i] = lines[i] + data.draw(
                st.sampled_from([":", " [", "{", " *x", " &a", " !!binary", " ${", " $${X}", "\t", " 0o17", " ~"])
            )
        elif op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines[i] = lines[i].replace("p1", "*anchor") if "p1" in lines[i] else lines[i]
    try:
        config.parse_document("\n".join(lines), "mutant.yaml", {"TOKEN": "t"})
    except ConfigError as exc:
        assert all(d.line >= 1 and d.col >= 1 for d in exc.diagnostics)
    finally:
        REDACTOR.clear()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fast_and_full_schema_validators_agree(data: st.DataObject) -> None:
    """fastjsonschema is the fast path; jsonschema reports the errors. Their verdicts must match."""
    doc = json.loads(json.dumps(config.parse_document(VALID, "valid.yaml", {"TOKEN": "t"})))
    for _ in range(data.draw(st.integers(1, 3))):
        target: Any = doc
        path = data.draw(
            st.sampled_from(
                [
                    "phone_numbers.0",
                    "phone_numbers.0.inbound_config",
                    "phone_numbers.0.outbound_config",
                    "agents.0",
                    "agents.0.properties",
                    "agents.0.properties.llm",
                    "settings",
                    "",
                ]
            )
        )
        try:
            for part in filter(None, path.split(".")):
                target = target[int(part)] if part.isdigit() else target[part]
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(target, dict):
            continue
        key = data.draw(
            st.sampled_from([*target.keys(), "extra", "name", "label", "transport", "idle_timeout", "preset", "token", "phone_number"])
        )
        value = data.draw(
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-5, 5),
                st.text(max_size=8),
                st.sampled_from(["+14155550100", "tls", "sctp", "byo", "a-b", "Bad_Name"]),
                st.just([]),
                st.just({}),
            )
        )
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = value
    full = not list(config._validator("config").iter_errors(doc))
    assert config.fast_is_valid(doc) == full


def test_the_compiled_validator_is_cached_and_a_damaged_cache_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.config import schema

    monkeypatch.setattr(schema, "__file__", str(tmp_path / "pkg" / "schema.py"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[int] = []

    def generate() -> str:
        calls.append(1)
        return "def answer():\n    return 42\n"

    for _ in range(2):
        namespace: dict[str, Any] = {}
        exec(schema._cached_code("probe-1", generate), namespace)
        assert namespace["answer"]() == 42
    assert calls == [1], "compiled once, then read from the cache"
    (tmp_path / "pkg" / "__pycache__" / "probe-1.marshal").write_bytes(b"not marshal data")
    exec(schema._cached_code("probe-1", generate), namespace)
    assert calls == [1, 1] and namespace["answer"]() == 42, "a damaged cache file is compiled again, never trusted"
