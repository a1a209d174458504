"""`state` edits: list the ledger's entries, forget one, adopt a running agent as a declared one."""

from __future__ import annotations

from typing import Any

from ..diff import applied_agent_essence
from ..errors import LedgerError
from ..ledger import Backend
from ..model import Address, Kind
from .session import Session


def state_entries(backend: Backend) -> list[tuple[str, dict[str, Any]]]:
    ledger = backend.load()
    return sorted(ledger.resources.items(), key=lambda kv: Address.parse(kv[0]).sort_key())


def state_forget(backend: Backend, address: str, *, lock_timeout: float = 0.0, command: str = "") -> None:
    Address.parse(address)
    with backend.lock(lock_timeout, command):
        ledger = backend.load()
        if address not in ledger.resources:
            raise LedgerError(f"{address} is not in the ledger {backend.location}")
        serial = ledger.serial
        del ledger.resources[address]
        backend.save(ledger, serial)


def state_adopt_agent(session: Session, address: str, agent_id: str) -> None:
    """Record a running agent (started elsewhere) as the instance of a declared agent."""
    parsed = Address.parse(address)
    spec = next((a for a in session.desired.agents if str(a.address) == address), None)
    if parsed.kind != Kind.AGENT.value or spec is None:
        raise LedgerError(f"{address} is not an agent declared in the configuration")
    doc = session.client.get_agent(spec.app_id, agent_id)
    with session.backend.lock(session.options.lock_timeout, session.options.command):
        ledger = session.backend.load()
        serial = ledger.serial
        ledger.resources[address] = {
            "kind": Kind.AGENT.value,
            "app_id": spec.app_id,
            "agent_id": agent_id,
            "instance_name": doc.get("name"),
            "channel": spec.channel,
            "pending": False,
            "applied": applied_agent_essence(spec, ledger.salt),
            "started_at": doc.get("start_ts"),
            "restarts": 0,
        }
        session.backend.save(ledger, serial)
