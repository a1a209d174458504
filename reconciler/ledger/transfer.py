"""Moving a ledger from one backend to another (`state migrate`), as it is: same lineage, salt,
serial and entries, so saved plans and fingerprints stay valid. Both sides are locked; the
destination must be empty; the source is left untouched."""

from __future__ import annotations

from ..errors import LedgerError
from . import Backend, Ledger


def migrate(source: Backend, target: Backend, *, lock_timeout: float = 0.0, command: str = "") -> Ledger:
    if source.location == target.location:
        raise LedgerError("state migrate needs two different ledgers")
    with source.lock(lock_timeout, command), target.lock(lock_timeout, command):
        ledger = source.load()
        if ledger.serial == 0 and not ledger.resources:
            raise LedgerError(f"the ledger {source.location} is empty: nothing to migrate")
        existing = target.load()
        if existing.serial != 0 or existing.resources:
            raise LedgerError(
                f"{target.location} already holds a ledger (serial {existing.serial}, lineage {existing.lineage}); "
                "refusing to overwrite it: migrate into an empty ledger"
            )
        target.save(ledger, ledger.serial - 1)
    return ledger
