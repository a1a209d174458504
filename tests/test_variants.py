"""Convergence under every reading of the API (issue 11): the end-to-end suite, parametrized over
the emulator's variants, alone and all compatible ones combined.

Each scenario drives the CLI against `emulator serve` with the variants switched on, and judges the
outcome from the emulator's default view (variants switched off for the check), which is the truth
the variants hide: exactly one agent of ours per logical name, the declared bindings, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Emulator, basic_headers
from .e2e import APP, Project

# every variant alone, then every compatible one at once (bare-configs and null-configs exclude
# each other: the combinations take one each)
SHOWN = ["extra-fields", "normalized-address"]
AGENTS = ["no-agent-name", "single-state", "page-limit-20", "idle-status", "uid-busy"]
WRITES = ["conflict-409", "not-found-type"]
ALONE = ["bare-configs", "null-configs", *SHOWN, *AGENTS, *WRITES]
VARIANTS: dict[str, list[str]] = {
    "none": [],
    **{name: [name] for name in ALONE},
    "all+bare-configs": ["bare-configs", *SHOWN, *AGENTS, *WRITES],
    "all+null-configs": ["null-configs", *SHOWN, *AGENTS, *WRITES],
}
NAMES = list(VARIANTS)


@pytest.fixture(params=NAMES)
def variant(request: pytest.FixtureRequest, emu: Emulator) -> Iterator[list[str]]:
    names = VARIANTS[request.param]
    if names:
        emu.admin("POST", "config", {"variants": names})
    if "idle-status" in names:  # nobody calls the agents: the API reports them IDLE
        for channel in ("concierge", "moved"):
            emu.admin("POST", "channels", {"app_id": APP, "channel": channel, "remote_users": False})
    yield names


def apply(run: Any, project: Project, *extra: str) -> Any:
    result = run("apply", str(project.path), "--auto-approve", *extra)
    return result


def settled(run: Any, project: Project) -> None:
    result = run("plan", str(project.path), "--detailed-exitcode")
    assert result.exit_code == 0, result.output


class Truth:
    """The account as the emulator's default reading shows it (variants off while reading)."""

    def __init__(self, emu: Emulator, variants: list[str]) -> None:
        self.emu, self.variants = emu, variants

    def __enter__(self) -> Truth:
        if self.variants:
            self.emu.admin("POST", "config", {"variants": []})
        return self

    def __exit__(self, *exc: object) -> None:
        if self.variants:
            self.emu.admin("POST", "config", {"variants": self.variants})

    def numbers(self) -> dict[str, Any]:
        return self.emu.numbers()

    def agents(self) -> list[dict[str, Any]]:
        return self.emu.agents(APP)

    def name(self, agent_id: str) -> str:
        doc = self.emu.session.get(f"{self.emu.api}/v2/projects/{APP}/agents/{agent_id}", headers=basic_headers(), timeout=10).json()
        return str(doc["name"])


def writes_since(emu: Emulator, before: int) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in emu.requests()[before:] if r["method"] != "GET"]


def assert_one_agent_each(project: Project, emu: Emulator, variants: list[str]) -> None:
    """Exactly one running agent per logical name, the one the ledger names, and nothing else."""
    owned = {k: v for k, v in project.ledger()["resources"].items() if k.startswith("agent/")}
    with Truth(emu, variants) as truth:
        running = {a["agent_id"] for a in truth.agents()}
        assert running == {e["agent_id"] for e in owned.values()}, (running, owned)
        for entry in owned.values():
            assert entry["pending"] is False and truth.name(entry["agent_id"]) == entry["instance_name"]


def assert_declared_bindings(project: Project, emu: Emulator, variants: list[str]) -> None:
    with Truth(emu, variants) as truth:
        live = truth.numbers()
    assert set(live) == {n["phone_number"] for n in project.numbers}
    for spec in project.numbers:
        got = live[spec["phone_number"]]
        assert got["label"] == spec["label"]
        assert got["inbound_config"]["pipeline_id"] == spec["inbound_config"].get("pipeline_id")
        assert got["outbound_config"]["pipeline_id"] == spec["outbound_config"].get("pipeline_id")


# --------------------------------------------------------------------------- the scenarios
def test_apply_from_empty_converges_and_a_second_apply_writes_nothing(
    project: Project, run: Any, emu: Emulator, variant: list[str]
) -> None:
    first = apply(run, project)
    assert first.exit_code == 0, first.output
    assert_declared_bindings(project, emu, variant)
    assert_one_agent_each(project, emu, variant)
    answered = {(r["method"], r["path"].rsplit("/", 1)[-1], r["status"]) for r in emu.requests()}
    if "conflict-409" in variant:  # the variant was met, and retried
        assert {("POST", "phone-numbers", 409), ("PATCH", "+14155550100", 409)} <= answered
    if "single-state" in variant or "page-limit-20" in variant:
        assert ("GET", "agents", 400) in answered
    before = len(emu.requests())
    again = apply(run, project)
    assert again.exit_code == 0 and "Nothing to apply." in again.stderr, again.output
    assert writes_since(emu, before) == []
    settled(run, project)
    if "idle-status" in variant:
        plan = run("plan", str(project.path))
        assert "is IDLE (no user in its channel): it counts as alive and is not restarted" in plan.stdout


def test_a_crashed_agent_is_restarted_and_a_replace_leaves_one_agent(project: Project, run: Any, emu: Emulator, variant: list[str]) -> None:
    assert apply(run, project).exit_code == 0
    crashed = project.ledger()["resources"]["agent/concierge"]["agent_id"]
    emu.admin("POST", f"agents/{crashed}/crash")
    restarted = apply(run, project)
    assert restarted.exit_code == 0 and "agent/concierge: restarted" in restarted.stderr, restarted.output
    assert project.ledger()["resources"]["agent/concierge"]["agent_id"] != crashed
    assert_one_agent_each(project, emu, variant)
    settled(run, project)
    # a replace in the same channel with the same uid: stop, wait for the old one to leave, start
    project.agents[0]["properties"]["remote_rtc_uids"] = ["2002"]
    project.write()
    replaced = apply(run, project)
    assert replaced.exit_code == 0 and "agent/concierge: replaced" in replaced.stderr, replaced.output
    assert_one_agent_each(project, emu, variant)
    settled(run, project)


def test_a_lost_start_answer_ends_with_exactly_one_agent(project: Project, run: Any, emu: Emulator, variant: list[str]) -> None:
    emu.fault(method="POST", path="/join$", drop=True, count=1)
    first = apply(run, project)
    assert first.exit_code == 0, first.output
    assert_one_agent_each(project, emu, variant)
    settled(run, project)


def test_a_lost_start_left_pending_is_resolved_on_the_next_run(project: Project, run: Any, emu: Emulator, variant: list[str]) -> None:
    emu.fault(method="POST", path="/join$", drop=True, count=1)
    emu.fault(method="POST", path="/join$", status=503, count=10)
    first = apply(run, project)
    assert first.exit_code == 1 and project.ledger()["resources"]["agent/concierge"]["pending"] is True
    emu.admin("DELETE", "faults")
    second = apply(run, project)
    assert second.exit_code == 0, second.output
    assert_one_agent_each(project, emu, variant)
    settled(run, project)


def test_an_out_of_band_binding_change_is_drift(project: Project, run: Any, emu: Emulator, variant: list[str]) -> None:
    assert apply(run, project).exit_code == 0
    emu.session.patch(
        f"{emu.api}/v2/phone-numbers/+14155550100",
        json={"inbound_config": {"pipeline_id": "pl_demo_sales"}},
        headers=basic_headers(),
        timeout=10,
    ).raise_for_status()
    plan = run("plan", str(project.path), "--format", "json", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    [change] = json.loads(plan.stdout)["changes"]
    assert change["address"] == "phone_number/+14155550100" and change["action"] == "update"
    assert {f["origin"] for f in change["fields"]} == {"drift"}
    assert apply(run, project).exit_code == 0
    assert_declared_bindings(project, emu, variant)
    settled(run, project)


LOST_START_VARIANTS = ["none", "no-agent-name", "all+bare-configs"]


@pytest.mark.parametrize("edit", ["channel", "remove"])
@pytest.mark.parametrize("variant", LOST_START_VARIANTS, indirect=True)
def test_after_a_lost_start_changing_the_channel_or_removing_the_agent_orphans_nothing(
    project: Project, run: Any, emu: Emulator, variant: list[str], edit: str
) -> None:
    emu.fault(method="POST", path="/join$", drop=True, count=1)
    emu.fault(method="POST", path="/join$", status=503, count=10)
    assert apply(run, project).exit_code == 1
    emu.admin("DELETE", "faults")
    if edit == "channel":
        project.agents[0]["properties"]["channel"] = "moved"
    else:
        project.agents = []
    project.write()
    second = apply(run, project, *(["--force"] if edit == "remove" else []))  # removing the only agent needs --force
    assert second.exit_code == 0, second.output
    assert_one_agent_each(project, emu, variant)
    settled(run, project)
