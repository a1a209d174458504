"""The reconcile loop against `emulator serve`: restarts, backoff, token renewal, modes, reloads.

Time is injected: a `FakeClock` for backoff, the emulator's own clock for tokens (it verifies them
on that clock). No test sleeps or depends on speed for its verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler import tokens
from reconciler.loop import Backoff, BackoffPolicy, Event, heal_part
from reconciler.model import Address
from reconciler.plan import Action, Change, FieldChange

from .conftest import Emulator
from .loop_rig import APP_A, APP_B, CERT, DECLARED_TOKEN, LLM_KEY, EmulatorClock, FakeClock, Rig, agent, run_cycle

# --------------------------------------------------------------------------- backoff, pure


def test_backoff_policy_doubles_from_10s_to_5min_and_jitter_only_shortens() -> None:
    policy = BackoffPolicy()
    assert [policy.delay(n, 0.0) for n in range(1, 8)] == [10, 20, 40, 80, 300, 300, 300]
    assert policy.delay(1, 0.5) == pytest.approx(9.0)
    assert policy.delay(6, 0.999) == pytest.approx(300 * (1 - 0.2 * 0.999))
    assert policy.delay(0, 0.0) == 0


def test_backoff_resets_after_ten_minutes_healthy() -> None:
    b = Backoff(BackoffPolicy(), lambda: 0.0)
    b.start_failed("agent/x", 0.0, "boom")
    b.start_failed("agent/x", 10.0, "boom")
    assert b.state("agent/x").failures == 2 and b.wait_left("agent/x", 10.0) == 20
    b.started("agent/x", 30.0)
    b.running("agent/x", 30.0 + 599)
    assert b.state("agent/x").failures == 2
    b.running("agent/x", 30.0 + 600)
    assert b.state("agent/x").failures == 0 and b.wait_left("agent/x", 630.0) == 0


def test_an_agent_that_dies_soon_after_its_start_counts_as_a_failure() -> None:
    b = Backoff(BackoffPolicy(), lambda: 0.0)
    b.started("agent/x", 100.0)
    b.noticed_down("agent/x", 160.0)
    b.noticed_down("agent/x", 170.0)  # the same death, noticed again: counted once
    assert b.state("agent/x").failures == 1 and b.wait_left("agent/x", 105.0) == 5  # 10 s after its start
    assert b.wait_left("agent/x", 160.0) == 0
    b.started("agent/y", 100.0)
    b.noticed_down("agent/y", 100.0 + 700)  # ran for more than 10 minutes: restarted at once
    assert b.state("agent/y").failures == 0 and b.wait_left("agent/y", 800.0) == 0


def test_heal_keeps_starts_and_renewals_only() -> None:
    a = Address("agent", "x")
    token = FieldChange("properties.token", "(sensitive)", "(minted)", sensitive=True, changed=True)
    prompt = FieldChange("properties.llm.system_messages", None, [], False)
    assert heal_part(Change(a, Action.RESTART, "agent is FAILED")) is not None
    assert heal_part(Change(a, Action.CREATE, "not started yet")) is not None
    assert heal_part(Change(a, Action.REPLACE, "channel changed", True)) is None
    assert heal_part(Change(a, Action.DELETE, "no longer declared", True)) is None
    assert heal_part(Change(Address("phone_number", "+14155550100"), Action.CREATE, "not imported yet")) is None
    assert heal_part(Change(a, Action.UPDATE, "properties.llm.system_messages can be updated in place", False, (prompt,))) is None
    both = Change(a, Action.UPDATE, "properties.llm.system_messages can be updated in place; token expires in 4m", False, (prompt, token))
    part = heal_part(both)
    assert part is not None and part.fields == (token,) and part.reason == "token expires in 4m"


# --------------------------------------------------------------------------- against the emulator


def test_an_agent_crashed_through_the_admin_api_is_restarted_by_the_next_cycle(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")])
    clock = FakeClock()
    loop = rig.loop(clock)
    assert run_cycle(loop).applied == 1
    first = rig.entry("lobby")["agent_id"]
    emu.admin("POST", f"agents/{first}/crash")
    clock.advance(30)
    run_cycle(loop)
    entry = rig.entry("lobby")
    assert entry["agent_id"] != first and entry["restarts"] == 1
    assert [a["agent_id"] for a in emu.agents(APP_A)] == [entry["agent_id"]]
    (line,) = rig.lines(action="restart", outcome="ok")
    assert line.address == "agent/lobby" and "FAILED" in line.reason and "crashed (emulator admin)" in line.reason
    clock.advance(30)
    assert run_cycle(loop).applied == 0  # in sync: nothing more


def test_an_agent_past_the_72_hour_cap_is_restarted(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")])
    clock = FakeClock()
    loop = rig.loop(clock)
    run_cycle(loop)
    first = rig.entry("lobby")["agent_id"]
    emu.advance(72 * 3600 + 1)
    clock.advance(72 * 3600 + 1)
    assert emu.agent(APP_A, first)["status"] == "STOPPED"
    run_cycle(loop)
    entry = rig.entry("lobby")
    assert entry["agent_id"] != first and entry["restarts"] == 1
    (line,) = rig.lines(action="restart", outcome="ok")
    assert "72 hour limit" in line.reason


def test_a_start_that_always_fails_backs_off_and_is_crash_looping_while_a_sibling_is_unaffected(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("healthy", app_id=APP_A), agent("broken", app_id=APP_B)])
    emu.fault(method="POST", path=f"/projects/{APP_B}/join$", status=400, count=1000)
    clock = FakeClock()
    start = clock.now
    loop = rig.loop(clock)
    attempts: list[float] = []
    delays: list[float] = []
    for _ in range(200):  # one cycle every 5 s of the fake clock, for 1000 s
        before = len(rig.joins(APP_B))
        run_cycle(loop)
        if len(rig.joins(APP_B)) > before:
            attempts.append(clock.now - start)
            delays.append(loop.backoff.state("agent/broken").last_delay)
        if clock.now - start == 500:
            healthy_id = rig.entry("healthy")["agent_id"]
            emu.admin("POST", f"agents/{healthy_id}/crash")
            crashed_at = clock.now - start
        clock.advance(5)
    assert attempts == [0, 10, 30, 70, 150, 450, 750]
    assert delays == [10, 20, 40, 80, 300, 300, 300]
    assert loop.backoff.crash_looping("agent/broken")
    assert loop.snapshot().crash_looping == ("agent/broken",)
    assert rig.lines(address="agent/broken", outcome="crash-looping")
    ok, detail = loop.health()
    assert ok and detail["crash_looping"] == ["agent/broken"]
    # the sibling was started in the first cycle and restarted in the cycle right after its crash
    healthy = rig.lines(address="agent/healthy", outcome="ok")
    assert [e.action for e in healthy] == ["create", "restart"]
    assert healthy[1].time - start == crashed_at + 5
    assert not rig.lines(address="agent/healthy", outcome="backoff")


def test_jitter_comes_from_the_injected_source(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("broken", app_id=APP_B)])
    emu.fault(method="POST", path=f"/projects/{APP_B}/join$", status=400, count=1000)
    clock = FakeClock()
    loop = rig.loop(clock, jitter=lambda: 0.5)
    loop.cycle()
    assert loop.backoff.state("agent/broken").last_delay == pytest.approx(9.0)
    assert loop.next_wait() == pytest.approx(9.0)


@pytest.fixture
def verifying(serve_emulator: Any) -> Emulator:
    """`emulator serve --app-certificate CERT`: it verifies every token on join and update, and
    fails an agent whose token expires on its clock ("token expired")."""
    emulator: Emulator = serve_emulator("--app-certificate", CERT)
    emulator.admin("POST", "config", {"stop_delay_s": 0.2})
    return emulator


def _token_rig(tmp_path: Path, emu: Emulator, ttl: str, **props: object) -> Rig:
    return Rig(tmp_path, emu, [agent("lobby", token=False, **props)], app_certificate="${AGORA_APP_CERTIFICATE}", token_ttl=ttl)


def test_a_short_lived_minted_token_is_renewed_through_update_without_a_restart(tmp_path: Path, verifying: Emulator) -> None:
    """The loop decides on an injected clock (issue times and renewals are exact); the emulator
    verifies on its own clock, which runs with real time, so the test keeps it at or behind the
    loop's and moves it past the first token's expiry itself. Real time only counts against the
    margins: 10 minutes until the first token expires, 9 minutes between the two expiries."""
    rig = _token_rig(tmp_path, verifying, "10m", advanced_features={"enable_rtm": True})
    sent = _record_sent_tokens(rig)
    emulator = EmulatorClock(verifying)
    clock = FakeClock(int(emulator()))
    loop = rig.loop(clock)
    run_cycle(loop)
    entry = rig.entry("lobby")
    agent_id, first, issued = entry["agent_id"], entry["token"], clock.now
    assert (first["issued_at"], first["expires_at"]) == (issued, issued + 600)
    assert set(first) == {"fingerprint", "issued_at", "expires_at"}
    clock.advance(300)
    assert run_cycle(loop).applied == 0  # 5 min of 10 left: not yet
    clock.advance(240)  # 1 min left: less than a quarter
    result = run_cycle(loop)
    assert result.applied == 1
    (line,) = rig.lines(action="update", outcome="ok")
    assert line.reason == "token expires in 1m"
    renewed = rig.entry("lobby")
    assert renewed["agent_id"] == agent_id and renewed["restarts"] == 0
    assert renewed["token"]["fingerprint"] != first["fingerprint"]
    assert (renewed["token"]["issued_at"], renewed["token"]["expires_at"]) == (issued + 540, issued + 1140)
    assert renewed["applied"] == entry["applied"]
    emulator.advance(issued + 601 - emulator())  # the emulator's clock past the first token's expiry
    assert emulator() > first["expires_at"]
    assert verifying.agent(APP_A, agent_id)["status"] == "RUNNING", "the agent runs on the renewed token"
    clock.advance(61)
    assert run_cycle(loop).applied == 0
    assert loop.snapshot().token_renewals["ok"] == 1 and loop.snapshot().restarts == 0
    text = (tmp_path / "state.json").read_text() + json.dumps([e.to_dict() for e in rig.events])
    assert len(sent) == 2 and CERT not in text and not [token for token in sent if token in text]


def _record_sent_tokens(rig: Rig) -> list[str]:
    """The RTC tokens the loop sends (join and update), as sent: to check that none is kept or logged."""
    sent: list[str] = []
    join, update = rig.client.join, rig.client.update_agent

    def spy_join(app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        sent.append(str(body["properties"]["token"]))
        return join(app_id, body)

    def spy_update(app_id: str, agent_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        sent.extend(str(properties[k]) for k in ("token",) if k in properties)
        return update(app_id, agent_id, properties)

    rig.client.join = spy_join  # type: ignore[method-assign]
    rig.client.update_agent = spy_update  # type: ignore[method-assign]
    return sent


def test_plan_shows_a_due_renewal_as_an_update_with_the_time_left(tmp_path: Path, verifying: Emulator) -> None:
    from reconciler import reconcile, render

    rig = _token_rig(tmp_path, verifying, "20m")
    clock = FakeClock(int(EmulatorClock(verifying)()))  # planning only reads the clock: a fixed one is exact
    loop = rig.loop(clock)
    run_cycle(loop)
    clock.advance(15 * 60)
    assert not reconcile.build_plan(loop.session).plan.changes  # exactly a quarter left: not yet
    clock.advance(60)
    session = loop.session
    planned = reconcile.build_plan(session)
    (change,) = planned.plan.changes
    assert change.action.value == "update" and change.reason == "token expires in 4m"
    (field,) = change.fields
    assert field.path == "properties.token" and field.sensitive and field.after == "(minted)"
    text = render.render_text(planned.plan, color=False)
    assert "token expires in 4m" in text


def test_minted_tokens_are_for_the_agents_app_channel_and_uid(tmp_path: Path, verifying: Emulator) -> None:
    """What the executor sends at a start verifies against the certificate, for this agent only."""
    seen: list[str] = []
    rig = _token_rig(tmp_path, verifying, "1h", agent_rtc_uid="agent-concierge", enable_string_uid=True)
    original = rig.client.join

    def spy(app_id: str, body: dict[str, object]) -> dict[str, object]:
        seen.append(str(body["properties"]["token"]))  # type: ignore[index]
        return original(app_id, body)

    rig.client.join = spy  # type: ignore[method-assign]
    loop = rig.loop(EmulatorClock(verifying))
    run_cycle(loop)
    (token,) = seen
    parsed = tokens.verify(token, CERT)
    assert parsed.app_id == APP_A and parsed.expire == 3600
    (rtc,) = parsed.services
    assert rtc.fields == (b"lobby", b"agent-concierge")
    assert token not in json.dumps([e.to_dict() for e in rig.events]) and token not in (tmp_path / "state.json").read_text()


def test_heal_mode_leaves_a_label_change_to_apply_and_full_mode_applies_it(tmp_path: Path, emu: Emulator) -> None:
    from .e2e import number_spec

    rig = Rig(tmp_path, emu, [agent("lobby")])
    rig.numbers = [number_spec("+14155550100", label="Front desk")]
    rig.write()
    clock = FakeClock()
    heal = rig.loop(clock)
    run_cycle(heal)
    assert "+14155550100" not in emu.numbers()  # heal never imports numbers
    assert rig.lines(action="plan", outcome="left")
    full = rig.loop(clock, mode="full")
    run_cycle(full)
    assert emu.numbers()["+14155550100"]["label"] == "Front desk"
    rig.numbers[0]["label"] = "Reception"
    rig.write()
    clock.advance(30)
    run_cycle(heal)
    assert emu.numbers()["+14155550100"]["label"] == "Front desk"
    left = rig.lines(action="plan", outcome="left")[-1]
    assert "phone_number/+14155550100 replace" in left.reason
    clock.advance(30)
    refused = full.cycle()  # a label change is a replace: refused without allow_replace
    assert refused.outcome == "refused" and "allow-replace" in str(refused.error)
    rig.settings["allow_replace"] = True
    rig.write()
    clock.advance(30)
    run_cycle(full)
    assert emu.numbers()["+14155550100"]["label"] == "Reception"


def test_a_broken_yaml_edit_keeps_the_last_good_declaration(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")])
    clock = FakeClock()
    loop = rig.loop(clock)
    run_cycle(loop)
    good = rig.path.read_text()
    rig.write(good.replace("agents:", "agents:\n  - name: [unclosed"))
    emu.admin("POST", f"agents/{rig.entry('lobby')['agent_id']}/crash")
    for _ in range(2):
        clock.advance(30)
        run_cycle(loop)
    kept = rig.lines(action="config", outcome="kept")
    assert len(kept) == 2 and all(str(rig.path) in e.reason for e in kept)
    assert rig.entry("lobby")["restarts"] == 1  # the last good declaration kept it running
    ok, detail = loop.health()
    assert ok and str(rig.path) in detail["config_error"]
    rig.agents.append(agent("second", uid="1002"))
    rig.write()
    clock.advance(30)
    run_cycle(loop)
    assert rig.lines(action="config", outcome="reloaded")
    assert "agent/second" in rig.ledger()["resources"]
    assert "config_error" not in loop.health()[1]


def test_events_never_carry_secrets(tmp_path: Path, emu: Emulator) -> None:
    rig = Rig(tmp_path, emu, [agent("lobby")])
    emu.fault(method="POST", path="/join$", status=400, count=1, echo_body=True)
    loop = rig.loop(FakeClock())
    loop.cycle()
    assert rig.lines(action="create", outcome="failed")
    dumped = json.dumps([e.to_dict() for e in rig.events])
    assert DECLARED_TOKEN not in dumped and LLM_KEY not in dumped


def test_event_lines_in_json(tmp_path: Path) -> None:
    from reconciler.cli.reconciling import format_event

    line = format_event(Event(1_800_000_000.0, "error", "agent/x", "restart", "failed", "boom"), "json")
    assert json.loads(line) == {
        "time": "2027-01-15T08:00:00Z",
        "level": "error",
        "address": "agent/x",
        "action": "restart",
        "outcome": "failed",
        "reason": "boom",
    }
    assert format_event(Event(1_800_000_000.0, "info", "-", "cycle", "success", "1 change(s) applied"), "text") == (
        "2027-01-15T08:00:00Z INFO    - cycle success: 1 change(s) applied"
    )


def test_an_agent_whose_renewal_is_blocked_is_restarted_with_a_fresh_token_after_it_fails(tmp_path: Path, verifying: Emulator) -> None:
    rig = _token_rig(tmp_path, verifying, "60s")
    clock = EmulatorClock(verifying)
    loop = rig.loop(clock)
    run_cycle(loop)
    first = rig.entry("lobby")
    verifying.fault(method="POST", path="/agents/[^/]+/update$", status=503, count=1000)
    clock.advance(50)  # 10 s left: the renewal is due, and refused
    assert loop.cycle().outcome == "partial"
    (failed,) = rig.lines(action="update", outcome="failed")
    assert failed.reason and loop.snapshot().token_renewals["failed"] == 1
    assert rig.entry("lobby")["token"] == first["token"]  # nothing recorded for a refused renewal
    clock.advance(20)  # past its expiry on the emulator's clock: the agent is failed
    status = verifying.agent(APP_A, first["agent_id"])
    assert (status["status"], status["message"]) == ("FAILED", "token expired")
    run_cycle(loop)
    (restart,) = rig.lines(action="restart", outcome="ok")
    assert "token expired" in restart.reason
    entry = rig.entry("lobby")
    assert entry["agent_id"] != first["agent_id"] and entry["restarts"] == 1
    assert (
        entry["token"]["fingerprint"] != first["token"]["fingerprint"] and entry["token"]["issued_at"] >= first["token"]["issued_at"] + 70
    )
    assert verifying.agent(APP_A, entry["agent_id"])["status"] == "RUNNING"  # the emulator accepted the fresh token


def test_a_declared_token_the_emulator_refuses_is_a_failed_start_not_a_crash(tmp_path: Path, verifying: Emulator) -> None:
    rig = Rig(tmp_path, verifying, [agent("lobby")])  # RTC_TOKEN is not a token for this certificate
    loop = rig.loop(FakeClock())
    assert loop.cycle().outcome == "partial"
    (failed,) = rig.lines(action="create", outcome="failed")
    assert "403" in failed.reason and "invalid_token" in failed.reason and DECLARED_TOKEN not in failed.reason


def test_the_ledger_lock_is_held_per_cycle_so_apply_runs_in_between(tmp_path: Path, emu: Emulator) -> None:
    from reconciler.ledger import open_backend

    rig = Rig(tmp_path, emu, [agent("lobby")])
    clock = FakeClock()
    loop = rig.loop(clock)
    run_cycle(loop)
    backend = open_backend(str(tmp_path / "state.json"))
    with backend.lock(0.0, "agora-reconciler apply (CI)"):  # free between cycles: CI's apply takes it
        emu.admin("POST", f"agents/{rig.entry('lobby')['agent_id']}/crash")
        clock.advance(30)
        locked = loop.cycle()  # a cycle meanwhile waits for the next interval, changing nothing
        assert locked.outcome == "locked" and "agora-reconciler apply (CI)" in str(locked.error)
        assert rig.entry("lobby")["restarts"] == 0
    clock.advance(30)
    run_cycle(loop)
    assert rig.entry("lobby")["restarts"] == 1
    assert loop.snapshot().cycles == {"success": 2, "locked": 1}


def test_heal_reports_what_cannot_be_applied_and_still_restarts_agents(tmp_path: Path, emu: Emulator) -> None:
    from .e2e import number_spec

    rig = Rig(tmp_path, emu, [agent("lobby")])
    rig.numbers = [number_spec("+14155550100", protect=True)]
    rig.write()
    clock = FakeClock()
    run_cycle(rig.loop(clock, mode="full"))
    rig.numbers = []  # a protected number no longer declared: the plan cannot be applied
    rig.write()
    heal = rig.loop(clock)
    emu.admin("POST", f"agents/{rig.entry('lobby')['agent_id']}/crash")
    clock.advance(30)
    run_cycle(heal)
    (error,) = rig.lines(action="plan", outcome="cannot-apply")
    assert "phone_number/+14155550100" in error.reason and "protect" in error.reason
    assert rig.entry("lobby")["restarts"] == 1 and "+14155550100" in emu.numbers()
