"""Renderers against golden files (UPDATE_GOLDEN=1 rewrites them), plus the Markdown size cap."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import config, render, wiring
from reconciler.model import Address, Location
from reconciler.plan import DRIFT, Action, Change, FieldChange, Plan, Unmanaged

GOLDEN = Path(__file__).parent / "golden"


def sample_plan() -> Plan:
    n = "phone_number"
    return Plan(
        changes=(
            Change(
                Address("agent", "lobby"),
                Action.RESTART,
                "agent is FAILED (agent A1: crashed): start it again",
                False,
                (),
                Location("agora.yaml", 30, 5),
            ),
            Change(
                Address(n, "+14155550100"),
                Action.CREATE,
                "not imported yet",
                False,
                (FieldChange("label", None, "Sales"), FieldChange("outbound_config.address", None, "${SIP_TRUNK}", True, True)),
                Location("agora.yaml", 5, 5),
            ),
            Change(
                Address(n, "+14155550101"),
                Action.UPDATE,
                "changed outside the tool (drift): pipeline binding inbound_config.pipeline_id differs: update in place",
                False,
                (FieldChange("inbound_config.pipeline_id", "pl_a", "pl_b", origin=DRIFT),),
                Location("agora.yaml", 12, 5),
            ),
            Change(
                Address(n, "+14155550102"),
                Action.REPLACE,
                "label cannot be changed in place: delete and import again (calls are not routed meanwhile)",
                True,
                (
                    FieldChange("label", "Old", "New"),
                    FieldChange("write_only.outbound_config.password", "(sensitive)", "(sensitive)", True, True),
                ),
                Location("agora.yaml", 20, 5),
            ),
            Change(Address(n, "+14155550103"), Action.DELETE, "owned and no longer declared", True),
            Change(
                Address("agent", "concierge"),
                Action.UPDATE,
                "properties.token can be updated in place",
                False,
                (FieldChange("properties.token", "(sensitive)", "${LOBBY_TOKEN}", True, True),),
                Location("agora.yaml", 40, 5),
            ),
        ),
        unchanged=3,
        unmanaged=(Unmanaged("agent", "STRANGER1"), Unmanaged(n, "+19995550000")),
        adopted=(Address(n, "+14155550104"),),
        warnings=("apply will refuse to replace phone_number/+14155550102 unless allow_replace (setting) or --allow-replace is given",),
        notes=("agent/concierge is IDLE (no user in its channel): it counts as alive and is not restarted",),
        config_digest="sha256:" + "1" * 64,
        live_digest="sha256:" + "2" * 64,
        ledger_serial=7,
        endpoint="local",
        created_at="2026-11-24T00:00:00Z",
        tool_version="0.1.0",
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


def test_text_golden() -> None:
    check_golden("plan.txt", render.render_text(sample_plan()))


def test_json_golden_and_schema() -> None:
    text = render.render_json(sample_plan())
    check_golden("plan.json", text)
    schema = config.load_schema("plan")
    jsonschema.Draft202012Validator(schema).validate(json.loads(text))
    assert config.validate_plan_document(json.loads(text)) == []


def test_markdown_golden() -> None:
    plan = sample_plan()
    check_golden("plan.md", render.render_markdown(plan, source="infra/agora", diagram=wiring.of_plan(plan)))


def test_github_golden() -> None:
    check_golden("plan.github.txt", render.render_github(sample_plan()))


def test_colour_only_when_asked() -> None:
    assert "\033[" not in render.render_text(sample_plan())
    assert "\033[32m+ phone_number/+14155550100" in render.render_text(sample_plan(), color=True)


def test_no_changes_text() -> None:
    plan = Plan(changes=(), unchanged=4)
    assert render.render_text(plan) == "No changes. The account matches the configuration. 4 unchanged, 0 unmanaged left alone.\n"


def test_markdown_stays_under_the_comment_limit() -> None:
    changes = tuple(
        Change(
            Address("phone_number", f"+1415{i:07d}"),
            Action.CREATE,
            "not imported yet",
            False,
            tuple(FieldChange(f"f{j}", None, "x" * 40) for j in range(5)),
        )
        for i in range(3000)
    )
    text = render.render_markdown(Plan(changes=changes))
    assert len(text) < 65_000
    assert "more change(s) not shown" in text and text.count("<details>") == 1


@pytest.mark.parametrize("warning", [True, False])
def test_markdown_warns_on_destructive_plans(warning: bool) -> None:
    action = Action.DELETE if warning else Action.CREATE
    text = render.render_markdown(Plan(changes=(Change(Address("phone_number", "+14155550100"), action, "r"),)))
    first, _, rest = text.partition("\n\n")
    assert first == "<!-- agora-reconciler plan: agora.yaml -->"
    assert rest.startswith("> [!WARNING]") is warning


def test_json_round_trip() -> None:
    plan = sample_plan()
    again = Plan.from_dict(json.loads(render.render_json(plan)))
    assert again.essence() == plan.essence() and again.summary() == plan.summary()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(['Sal\u00e9s "q" \\ \t\n\u2028', "\U0001f4de", "x" * 130]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=600, deadline=None)
@given(json_values)
def test_a_shown_value_is_its_json_clipped(value: Any) -> None:
    text = "(none)" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)
    assert render._value(value) == (text if len(text) <= 120 else text[:117] + "...")
