"""Attack on the transport's hand-built calls and the lazy imports at `-vv` (commits 88ed7e3,
094f11c): real processes, every output format of plan, apply and drift, DEBUG logs on, and API
errors whose description repeats the request body (the SIP password inside the address of an
import, the RTC token and LLM key of a join): no secret reaches stdout, stderr, the plan file or
the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import CUSTOMER_SECRET, Emulator, run_process
from .e2e import SECRET_KEY, SECRET_SIP, SECRET_TOKEN, Project, agent_spec, number_spec

SECRETS = (SECRET_TOKEN, SECRET_KEY, SECRET_SIP, CUSTOMER_SECRET)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_at_vv_in_any_format_even_when_the_api_echoes_the_request(
    fmt: str, project: Project, emu: Emulator, api_env: dict[str, str], tmp_path: Path
) -> None:
    project.numbers[0]["outbound_config"]["address"] = "alice:${SIP_PASSWORD}@sip.example.com"
    project.write()
    env = {**api_env, **project.env()}
    outputs: list[Any] = []
    plan_file = tmp_path / "plan.json"
    for plan_fmt in ("text", "json", "markdown"):
        outputs.append(run_process("plan", str(project.path), "--format", plan_fmt, "--out", str(plan_file), "-vv", env=env))
    # every write of the first apply is refused with the request body in the error description
    emu.fault(method="POST", path="phone-numbers$", status=400, count=1, echo_body=True)
    emu.fault(method="POST", path="join$", status=400, count=1, echo_body=True)
    failed = run_process("apply", str(project.path), "--auto-approve", "--format", fmt, "-vv", env=env)
    assert failed.exit_code != 0
    assert '"token": "***"' in failed.output, "an echoed body is shown, redacted"
    outputs.append(failed)
    outputs.append(run_process("apply", str(project.path), "--auto-approve", "--format", fmt, "-vv", env=env))
    project.numbers.append(number_spec("+14155550177", outbound_config={"address": "bob:${SIP_PASSWORD}@sip.example.com"}))
    project.agents.append(agent_spec("second"))
    project.write()
    emu.fault(method="PATCH", path="phone-numbers/", status=422, count=1, echo_body=True)
    emu.fault(method="POST", path="update$|join$", status=400, count=1, echo_body=True)
    outputs.append(run_process("apply", str(project.path), "--auto-approve", "--format", fmt, "-vv", env=env))
    for drift_fmt in ("text", "json", "markdown", "github"):
        outputs.append(run_process("drift", str(project.path), "--format", drift_fmt, "-vv", env=env))
    texts = [o.stdout + o.stderr for o in outputs] + [plan_file.read_text(), project.state.read_text()]
    assert any("DEBUG" in t or "debug" in t for t in texts), "DEBUG logs were on"
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text
