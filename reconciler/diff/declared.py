"""The declared side of the diff: what is worked out from the declaration alone (a number's
secrets, write-only values, applied essence with its fingerprints and flat declared form; an agent's
applied essence), and `DeclaredForms`, which keeps them between plans of one declaration (the
reconcile loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model import AgentSpec, Desired, PhoneNumberSpec
from ..observed import declared_form, phone_secrets
from .fields import _applied_phone, _keys_sensitive, applied_agent_essence, has_sensitive_keys


@dataclass(frozen=True)
class PhoneForms:
    """The declared side of a number's comparison: its secrets, write-only values, applied essence
    (as the ledger holds it) and flat declared form. Read only: never handed out of the diff.
    `plain`: nothing of it is secret (no `${VAR}`, no write-only value, no credential-named key),
    so its applied essence is its essence as is and no value of its forms is ever fingerprinted."""

    secrets: Mapping[str, str]
    write_only: Mapping[str, Any]
    applied: Mapping[str, Any]
    form: Mapping[str, Any]
    plain: bool = False


def phone_forms(spec: PhoneNumberSpec, salt: str) -> PhoneForms:
    essence, write_only = spec.essence(), spec.write_only()  # worked out once, for both comparisons
    secrets = phone_secrets(spec, write_only)
    if not secrets and not _has_sensitive_keys(essence):  # nothing to fingerprint: the essence as the ledger holds it
        return PhoneForms(secrets, write_only, {**essence, "write_only": {}}, declared_form(spec, essence), True)
    return PhoneForms(secrets, write_only, _applied_phone(essence, write_only, secrets, salt), declared_form(spec, essence))


_ESSENCE_KEYS = ("provider", "label", "inbound", "outbound", "inbound_config", "outbound_config")  # `phone_essence`'s
_CONFIGS = ("inbound_config", "outbound_config")
_SCALARS = frozenset({str, int, float, bool, type(None)})
_PLAIN_ESSENCE_KEYS = not _keys_sensitive(_ESSENCE_KEYS)


def _has_sensitive_keys(essence: dict[str, Any]) -> bool:
    """`has_sensitive_keys` of a phone essence, without the walk for the usual shape: its own keys
    are `_ESSENCE_KEYS` (none a credential) and its configs hold scalars and lists of scalars."""
    if not _PLAIN_ESSENCE_KEYS or tuple(essence) != _ESSENCE_KEYS:
        return has_sensitive_keys(essence)
    if type(essence["provider"]) not in _SCALARS or type(essence["label"]) not in _SCALARS:
        return has_sensitive_keys(essence)
    for config in _CONFIGS:
        values = essence[config]
        if type(values) is not dict or _keys_sensitive(tuple(values)):
            return has_sensitive_keys(essence)
        for value in values.values():
            if type(value) not in _SCALARS and (type(value) is not list or any(type(v) not in _SCALARS for v in value)):
                return has_sensitive_keys(essence)
    return False


class DeclaredForms:
    """What the diff works out from the declaration alone (applied essences with their secret
    fingerprints, declared forms), kept between plans of one unchanged declaration: the reconcile
    loop keeps one per declaration it reads. Entries belong to the `Desired` object and the ledger
    salt they were made for; another declaration or salt empties the cache first."""

    def __init__(self) -> None:
        self._owner: tuple[Desired, str] | None = None
        self._phones: dict[int, PhoneForms] = {}
        self._agents: dict[int, dict[str, Any]] = {}

    def bind(self, desired: Desired, salt: str) -> None:
        if self._owner is None or self._owner[0] is not desired or self._owner[1] != salt:
            self._owner = (desired, salt)  # holding `desired` keeps its specs' ids from being reused
            self._phones.clear()
            self._agents.clear()

    def phone(self, spec: PhoneNumberSpec, salt: str) -> PhoneForms:
        forms = self._phones.get(id(spec))
        if forms is None:
            forms = self._phones[id(spec)] = phone_forms(spec, salt)
        return forms

    def agent(self, spec: AgentSpec, salt: str) -> dict[str, Any]:
        after = self._agents.get(id(spec))
        if after is None:
            after = self._agents[id(spec)] = applied_agent_essence(spec, salt)
        return after

    def __len__(self) -> int:
        return len(self._phones) + len(self._agents)
