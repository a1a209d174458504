"""The safety gate: how much of the account a plan may destroy or forget before it needs `--force`.

Owns DESIGN.md section 5's rules, counted on what will really be sent: a delete that only drops
the ledger entry of something already gone sends nothing and does not count; a `prune: true`
delete of a number the tool never owned does. Besides destruction, a plan is unsafe when too many
owned numbers are missing from the account's list at once: a list answer that lacks them is not
proof that they are gone (a wrong account or endpoint, a truncated answer), so the ledger keeps
them until `--force` says otherwise. Agents are not counted there: every owned agent missing from
the sweep is probed by id, so an agent reported gone is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .ledger import Ledger
from .model import Desired, Kind, Live
from .plan import DESTRUCTIVE, Action, Change, Plan

_LABELS = {Kind.PHONE_NUMBER.value: "phone numbers", Kind.AGENT.value: "agents"}


@dataclass(frozen=True)
class SafetyPolicy:
    max_delete_pct: float = 30.0
    min_existing: int = 10


@dataclass(frozen=True)
class Exposure:
    """What a plan could touch, for one kind of resource."""

    owned: int = 0  # ledger entries
    declared: int = 0  # in the configuration
    live: int = 0  # in the account's list answer, owned or not
    unowned_live: int = 0  # in the list answer and not in the ledger (what `prune` may delete)
    prune: bool = False
    vanished: frozenset[str] = field(default_factory=frozenset)  # owned, imported, absent from the list


def exposures(desired: Desired, live: Live, ledger: Ledger, *, prune: bool) -> dict[str, Exposure]:
    """The exposure of each kind, from the declaration, the live snapshot and the ledger."""
    numbers = ledger.of_kind(Kind.PHONE_NUMBER.value)
    live_numbers = {f"{Kind.PHONE_NUMBER.value}/{n}" for n in live.phone_numbers}
    # a pending import may never have happened: its absence proves nothing either way
    vanished = frozenset(k for k, e in numbers.items() if k not in live_numbers and not e.get("pending"))
    agents = ledger.of_kind(Kind.AGENT.value)
    return {
        Kind.PHONE_NUMBER.value: Exposure(
            owned=len(numbers),
            declared=len(desired.phone_numbers),
            live=len(live_numbers),
            unowned_live=len(live_numbers - set(numbers)),
            prune=prune,
            vanished=vanished,
        ),
        Kind.AGENT.value: Exposure(owned=len(agents), declared=len(desired.agents), live=len(live.agent_ids())),
    }


def sends(change: Change) -> bool:
    """Whether a destructive change really sends a delete/stop (not only a ledger edit)."""
    return change.action in DESTRUCTIVE and change.disruptive


def safety_violations(plan: Plan, exposure: Mapping[str, Exposure], policy: SafetyPolicy) -> list[str]:
    """Why this plan is unsafe (empty when it is safe)."""
    problems: list[str] = []
    for kind, label in _LABELS.items():
        problems += _kind_violations(plan, kind, label, exposure.get(kind) or Exposure(), policy)
    return problems


def _kind_violations(plan: Plan, kind: str, label: str, ex: Exposure, policy: SafetyPolicy) -> list[str]:
    changes = [c for c in plan.changes if c.kind == kind]
    sent = [c for c in changes if sends(c)]
    pruned = sum(1 for c in sent if c.action is Action.DELETE and c.prior is None)
    deleted_live = sum(1 for c in sent if c.action is Action.DELETE)
    problems = []
    if sent and ex.declared == 0:
        what = f"all {len(sent)} owned ones" if len(sent) >= ex.owned and not pruned else f"{len(sent)} of them"
        never = f" ({pruned} never owned, prune: true)" if pruned else ""
        problems.append(f"the configuration declares no {label} and the plan deletes {what}{never} (an empty or truncated file?)")
    elif pruned and deleted_live >= ex.live > 0:
        problems.append(f"prune: true and the plan deletes every live {label[:-1]} ({ex.live}, {pruned} never owned by this tool)")
    population = ex.owned + (ex.unowned_live if ex.prune else 0)
    if sent and population >= policy.min_existing:
        share = 100.0 * len(sent) / population
        if share > policy.max_delete_pct:
            whose = "owned or live" if ex.prune and ex.unowned_live else "owned"
            problems.append(
                f"the plan deletes or replaces {len(sent)} of {population} {whose} {label} "
                f"({share:.0f}% > max_delete_pct {policy.max_delete_pct:g}%)"
            )
    gone = sum(1 for c in changes if str(c.address) in ex.vanished)
    if gone and (gone >= ex.owned or (ex.owned >= policy.min_existing and 100.0 * gone / ex.owned > policy.max_delete_pct)):
        problems.append(
            f"{gone} of {ex.owned} owned {label} are missing from the account's list; a list that lacks them is not "
            "proof they are gone (wrong account or endpoint, or an incomplete answer?), so the ledger keeps them"
        )
    return problems
