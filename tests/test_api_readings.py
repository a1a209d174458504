"""The client, live read and executor under the uncertain readings of the API (issue 11), against
`emulator serve` with its variants: list fallbacks and their request counts, lost-start candidates,
the bounded wait before a replacement joins with the same uid, 409 `conflict` and `not_found`.

Waiting is deterministic: the executor's `sleep` moves the emulator's clock instead of sleeping.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from reconciler import config, reconcile
from reconciler.client import Client, Credentials, RetryPolicy, resolve_endpoint
from reconciler.errors import ConflictError, NotFoundError
from reconciler.executor import Executor
from reconciler.ledger.journal import LedgerJournal
from reconciler.live import StartAttempt, list_agents, list_form, started_by

from .conftest import CUSTOMER_ID, CUSTOMER_SECRET, Emulator, agent_props
from .e2e import APP, Project


def client_for(emu: Emulator) -> Client:
    return Client(resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET), sleep=lambda s: None)


def variants(emu: Emulator, *names: str) -> None:
    emu.admin("POST", "config", {"variants": list(names)})


def seed_agents(emu: Emulator, count: int, channel: str = "room", start_ts: int | None = None) -> list[str]:
    specs = [
        {"app_id": APP, "name": f"seeded-{i}", "preset": "p", "properties": agent_props(channel, uid=str(2000 + i))}
        | ({"start_ts": start_ts} if start_ts is not None else {})
        for i in range(count)
    ]
    ids: list[str] = emu.seed(agents=specs)["agent_ids"]
    return ids


# --------------------------------------------------------------------------- agents.list fallbacks
# 45 running agents, a sweep of the 4 alive states: (variants, 400s met once per run, requests per sweep)
LIST_CASES = [
    ((), 0, 1),  # several states at once, pages of 100
    (("single-state",), 1, 4),  # one query per state
    (("page-limit-20",), 2, 3),  # one-state form tried first (it does not cure a page size), then pages of 20
    (("single-state", "page-limit-20"), 3, 6),  # one query per state, RUNNING in 3 pages of 20
]


@pytest.mark.parametrize(("names", "refused", "per_sweep"), LIST_CASES, ids=["default", "single-state", "page-limit-20", "both"])
def test_agents_list_falls_back_once_per_run_and_counts_its_requests(
    emu: Emulator, names: tuple[str, ...], refused: int, per_sweep: int
) -> None:
    ids = seed_agents(emu, 45)
    if names:
        variants(emu, *names)
    client = client_for(emu)
    states = (0, 1, 2, 5)
    first = list_agents(client, APP, from_time=0, states=states)
    assert sorted(a["agent_id"] for a in first) == sorted(ids)
    assert client.requests_made["GET agents.list"] == refused + per_sweep
    assert len(list_form(client).refusals) == refused
    again = list_agents(client, APP, from_time=0, states=states)
    assert sorted(a["agent_id"] for a in again) == sorted(ids)
    assert client.requests_made["GET agents.list"] == refused + 2 * per_sweep  # remembered: no 400 the second time
    assert [r["status"] for r in emu.requests() if r["path"].endswith("/agents")].count(400) == refused


def test_a_400_that_no_query_form_cures_is_an_error(emu: Emulator) -> None:
    emu.fault(method="GET", path="/agents$", status=400, count=10)
    client = client_for(emu)
    with pytest.raises(Exception, match="HTTP 400"):
        list_agents(client, APP, from_time=0, states=(1, 2))
    assert len([r for r in emu.requests() if r["path"].endswith("/agents")]) == 4  # every form tried once


# --------------------------------------------------------------------------- lost-start candidates
def test_without_names_the_candidates_are_unowned_agents_of_the_channel_started_since(emu: Emulator) -> None:
    variants(emu, "no-agent-name")
    now = _emulator_now(emu)
    [before] = seed_agents(emu, 1, start_ts=int(now) - 3600)  # alive, but started before the attempt
    [mine] = emu.seed(agents=[{"app_id": APP, "name": "lobby-1234abcd", "preset": "p", "properties": agent_props("room")}])["agent_ids"]
    client = client_for(emu)
    attempt = StartAttempt(APP, "room", "lobby-1234abcd", "1001", attempted_at=now - 5)
    assert [a.agent_id for a in started_by(client, attempt, owned_ids=set())] == [mine]
    assert started_by(client, attempt, owned_ids={mine}) == ()
    [other] = emu.seed(agents=[{"app_id": APP, "name": "intruder", "preset": "p", "properties": agent_props("room", uid="9")}])["agent_ids"]
    found = {a.agent_id for a in started_by(client, attempt, owned_ids=set())}
    assert found == {mine, other} and before not in found


def test_with_names_only_the_agent_with_the_attempted_name_is_it(emu: Emulator) -> None:
    [mine, _other] = emu.seed(
        agents=[
            {"app_id": APP, "name": "lobby-1234abcd", "preset": "p", "properties": agent_props("room")},
            {"app_id": APP, "name": "intruder", "preset": "p", "properties": agent_props("room", uid="9")},
        ]
    )["agent_ids"]
    client = client_for(emu)
    attempt = StartAttempt(APP, "room", "lobby-1234abcd", "1001", attempted_at=_emulator_now(emu) - 5)
    assert [a.agent_id for a in started_by(client, attempt, owned_ids=set())] == [mine]
    gone = StartAttempt(APP, "room", "lobby-ffffffff", "1001", attempted_at=_emulator_now(emu) - 5)
    assert started_by(client, gone, owned_ids=set()) == ()


_PROBES = itertools.count()


def _emulator_now(emu: Emulator) -> float:
    """The emulator's clock (it is ours unless advanced): the newest start_ts of a probe agent."""
    name = f"probe-{next(_PROBES)}"
    [probe] = emu.seed(agents=[{"app_id": "clock-probe", "name": name, "preset": "p", "properties": agent_props("probe")}])["agent_ids"]
    return float(emu.agent("clock-probe", probe)["start_ts"])


# --------------------------------------------------------------------------- the wait before re-joining
def _replace_plan(project: Project, emu: Emulator, run: Any) -> tuple[Client, reconcile.Planned, reconcile.Session]:
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    project.agents[0]["properties"]["remote_rtc_uids"] = ["2002"]  # a replace in the same channel, same uid
    project.write()
    desired = config.load([str(project.path)])
    client = client_for(emu)
    session = reconcile.Session.open(desired, client, reconcile.resolve_options(desired, {}))
    planned = reconcile.build_plan(session)
    assert [c.action.value for c in planned.plan.changes] == ["replace"]
    return client, planned, session


def test_a_replace_waits_for_the_old_instance_to_leave_and_says_so(project: Project, emu: Emulator, run: Any) -> None:
    variants(emu, "uid-busy")
    emu.admin("POST", "config", {"stop_delay_s": 20})
    client, planned, session = _replace_plan(project, emu, run)
    old = planned.ledger.resources["agent/concierge"]["agent_id"]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the emulator's clock moves instead
        slept.append(seconds)
        emu.advance(seconds)

    report = Executor(client, LedgerJournal(session.backend, planned.ledger), sleep=sleep).run(planned.plan)
    assert report.failures == []
    [result] = report.succeeded
    assert result.detail is not None and result.detail.startswith("waited ") and f"for agent {old} to leave" in result.detail
    assert 0 < sum(slept) <= 25  # bounded by the 20 s stop on the emulator clock (real time only shortens it)
    assert [a["agent_id"] for a in emu.agents(APP)] == [session.backend.load().resources["agent/concierge"]["agent_id"]]


def test_a_replace_whose_old_instance_does_not_leave_in_time_starts_nothing(project: Project, emu: Emulator, run: Any) -> None:
    emu.admin("POST", "config", {"stop_delay_s": 600})
    client, planned, session = _replace_plan(project, emu, run)
    before = len(emu.requests())
    executor = Executor(client, LedgerJournal(session.backend, planned.ledger), sleep=emu.advance, leave_timeout_s=30)
    report = executor.run(planned.plan)
    [failure] = report.failures
    assert failure.error is not None and "is still STOPPING after 3" in failure.error and "not starting its replacement" in failure.error
    assert not [r for r in emu.requests()[before:] if r["path"].endswith("/join")]


def test_a_409_on_a_first_join_is_not_taken_for_our_name(project: Project, emu: Emulator, run: Any) -> None:
    variants(emu, "uid-busy")
    emu.seed(agents=[{"app_id": APP, "name": "squatter", "preset": "p", "properties": agent_props("concierge", uid="1001")}])
    result = run("apply", str(project.path), "--auto-approve")
    assert result.exit_code == 1
    assert "join refused with 409 TaskConflict and no agent of ours has the name concierge-" in result.stderr
    assert "another agent in channel concierge may hold uid 1001" in result.stderr
    assert project.ledger()["resources"]["agent/concierge"]["agent_id"] is None  # nothing adopted


# --------------------------------------------------------------------------- phone-number errors
def test_409_conflict_is_retried_for_every_write_and_404_not_found_is_not_found(emu: Emulator) -> None:
    variants(emu, "conflict-409", "not-found-type")
    client = client_for(emu)
    body = {
        "provider": "byo",
        "phone_number": "+14155550177",
        "label": "x",
        "inbound_config": {},
        "outbound_config": {"address": "sip.example.com", "transport": "tls"},
    }
    assert client.add_number(body)["phone_number"] == "+14155550177"
    assert client.update_number("+14155550177", {"inbound_config": {"pipeline_id": "pl_demo_support"}})["phone_number"]
    client.delete_number("+14155550177")
    statuses = [(r["method"], r["status"]) for r in emu.requests() if "phone-numbers" in r["path"]]
    assert statuses == [("POST", 409), ("POST", 201), ("PATCH", 409), ("PATCH", 200), ("DELETE", 409), ("DELETE", 204)]
    with pytest.raises(NotFoundError) as caught:
        client.get_number("+14155550177")
    assert caught.value.api_reason == "not_found"


def test_a_lasting_409_conflict_gives_up_as_a_conflict_not_an_exhausted_budget(emu: Emulator) -> None:
    locked = {"error_type": "conflict", "message": "Concurrent modification conflict or resource locked"}
    emu.fault(method="POST", path="phone-numbers$", status=409, body=locked, count=20)
    client = Client(
        resolve_endpoint(emu.url), Credentials.basic(CUSTOMER_ID, CUSTOMER_SECRET), sleep=lambda s: None, retry=RetryPolicy(max_attempts=3)
    )
    with pytest.raises(ConflictError) as caught:
        client.add_number({"phone_number": "+14155550178"})
    assert caught.value.api_reason == "conflict"
    assert len([r for r in emu.requests() if r["path"].endswith("phone-numbers")]) == 3


def test_several_candidates_for_a_lost_start_are_refused_naming_them_until_one_is_adopted(
    project: Project, emu: Emulator, run: Any
) -> None:
    variants(emu, "no-agent-name")
    emu.fault(method="POST", path="/join$", drop=True, count=1)
    emu.fault(method="POST", path="/join$", status=503, count=10)
    assert run("apply", str(project.path), "--auto-approve").exit_code == 1
    emu.admin("DELETE", "faults")
    [ours] = [a["agent_id"] for a in emu.agents(APP)]
    [intruder] = emu.seed(agents=[{"app_id": APP, "name": "intruder", "preset": "p", "properties": agent_props("concierge", uid="9")}])[
        "agent_ids"
    ]
    plan = run("plan", str(project.path))
    first, second = sorted([ours, intruder])
    assert "Error: agent/concierge: the start of instance concierge-" in plan.stdout
    assert f"2 agents started in that channel since could be it ({first}, {second})" in plan.stdout
    before = len(emu.requests())
    refused = run("apply", str(project.path), "--auto-approve")
    assert refused.exit_code == 1 and "the plan cannot be applied" in refused.stderr and "state adopt agent/concierge" in refused.stderr
    assert [r for r in emu.requests()[before:] if r["method"] != "GET"] == []  # refused before any write
    assert run("state", "adopt", "agent/concierge", "--agent-id", ours, "--config", str(project.path)).exit_code == 0
    assert run("apply", str(project.path), "--auto-approve").exit_code == 0
    assert run("plan", str(project.path), "--detailed-exitcode").exit_code == 0
    assert {a["agent_id"] for a in emu.agents(APP)} == {ours, intruder}  # the stranger is left alone


@pytest.mark.parametrize(("names", "requests"), [((), 2), (("single-state",), 6), (("single-state", "page-limit-20"), 8)])
def test_plan_says_how_many_requests_the_live_read_took(
    project: Project, emu: Emulator, run: Any, names: tuple[str, ...], requests: int
) -> None:
    """1 phone-numbers list + the agents sweep of one app (4 alive states; the 400s of learning)."""
    if names:
        variants(emu, *names)
    result = run("plan", str(project.path), "-v")
    assert result.exit_code == 0, result.output
    assert f"read the account in {requests} request(s) (1 app(s); agents.list: " in result.stderr
    assert len(emu.requests()) == requests
