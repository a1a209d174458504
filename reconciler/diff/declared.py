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
from ..plan import FieldChange
from .fields import _applied_phone, _keys_sensitive, applied_agent_essence, created_fields, has_sensitive_keys


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
    if not _PLAIN_ESSENCE_KEYS or tuple(essence) != _ESSENCE_KEYS or not _usual_values(essence):
        return has_sensitive_keys(essence)
    return False


def _usual_values(essence: Mapping[str, Any]) -> bool:
    """Provider and label are scalars, and the configs are dicts of scalars and lists of scalars
    whose keys name no credential."""
    if type(essence["provider"]) not in _SCALARS or type(essence["label"]) not in _SCALARS:
        return False
    for config in _CONFIGS:
        values = essence[config]
        if type(values) is not dict or _keys_sensitive(tuple(values)):
            return False
        for value in values.values():
            kind = type(value)
            if kind in _SCALARS:
                continue
            if kind is not list:
                return False
            for item in value:  # a loop, not any(generator): called for every number
                if type(item) not in _SCALARS:
                    return False
    return True


_APPLIED_KEYS = (*_ESSENCE_KEYS, "write_only")  # a plain number's applied essence: its essence, nothing write-only
_CREATED_ORDER = tuple(sorted(_ESSENCE_KEYS))


def created_phone_fields(spec: PhoneNumberSpec, forms: PhoneForms | None = None) -> tuple[FieldChange, ...]:
    """`created_fields(spec.essence(), secrets)`, what a create shows (`forms`: the number's, when
    the caller has them; else only what a create needs is worked out). A plain number of the usual
    shape is read from its essence (or its applied essence, the same then) without the general walk:
    no path of it is secret, so every value is shown as it is (lists copied, as masking copies them)."""
    if forms is not None:
        source, secrets, plain = forms.applied, forms.secrets, forms.plain
    else:
        source = spec.essence()
        secrets = phone_secrets(spec, spec.write_only())
        plain = not secrets  # and no credential-named key: the usual shape checked next has none
    keys = tuple(source)
    if not (plain and _PLAIN_ESSENCE_KEYS and keys in (_ESSENCE_KEYS, _APPLIED_KEYS) and _usual_values(source)):
        return tuple(created_fields(spec.essence(), secrets))
    out: list[FieldChange] = []
    for key in _CREATED_ORDER:
        value = source[key]
        if value is None:
            continue
        if type(value) is not dict:  # provider, label, inbound, outbound
            out.append(FieldChange(key, None, value))
            continue
        if not value:  # a config: `pipeline_id` is always there, but shown as the walk shows it
            out.append(FieldChange(key, None, {}))
        for name in sorted(value):
            item = value[name]
            if item is not None and name != "write_only":
                out.append(FieldChange(f"{key}.{name}", None, list(item) if type(item) is list else item))
    return tuple(out)


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
