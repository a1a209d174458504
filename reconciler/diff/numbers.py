"""The diff decisions for phone numbers (DESIGN.md section 3): create, update in place, replace,
delete, adopt or leave alone, and why; replace-protection and legacy observed forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..ledger import Ledger
from ..model import (
    Address,
    Desired,
    Kind,
    Live,
    PhoneNumberSpec,
    is_secret_path,
    secret_display,
)
from ..observed import (
    ADDRESSES,
    ADDRESSES_ITEM,
    ASSOCIATED,
    MUTABLE_PATHS,
    adoption_differences,
    clear_items_fingerprinted,
    declared_form,
    declared_index_secrets,
    drifted,
    fingerprinted,
    flat_form,
    live_form,
    quietly_in_sync,
    readable,
)
from ..plan import DRIFT, Action, Change, FieldChange, Unmanaged
from ..secrets import SENSITIVE
from .agents import format_seconds, in_flight
from .declared import DeclaredForms, PhoneForms, created_phone_fields, phone_forms
from .fields import _applied_phone, _shown, field_changes
from .result import DiffResult


# --------------------------------------------------------------------------- phone numbers
def _diff_number(
    spec: PhoneNumberSpec,
    live: Mapping[str, Any] | None,
    entry: Mapping[str, Any] | None,
    salt: str,
    out: DiffResult,
    cache: DeclaredForms | None = None,
) -> None:
    if live is None:
        reason = "owned but missing from the account (deleted outside the tool): import it again" if entry else "not imported yet"
        if entry is not None and entry.get("pending"):
            reason = "its import was interrupted before the answer arrived: apply imports it (a conflict means it happened)"
        fields = created_phone_fields(spec, cache.phone(spec, salt) if cache is not None else None)  # no forms to compare
        out.changes.append(Change(spec.address, Action.CREATE, reason, False, fields, spec.location, spec))
        return
    forms = cache.phone(spec, salt) if cache is not None else phone_forms(spec, salt)
    secrets = forms.secrets
    if entry is None:
        out.adopted.append(spec.address)
        fields = _adoption_fields(spec, live, secrets)
        origin = "adopted (in the account, not yet owned; compared on the fields the API shows): "
    else:
        upgraded = upgraded_phone_entry(spec, entry, salt, forms) if spec.secrets else None
        fields = _owned_number_fields(spec, live, entry if upgraded is None else upgraded, salt, forms)
        origin = "changed outside the tool (drift): " if all(f.origin == DRIFT for f in fields) else ""
    if not fields:
        out.unchanged += 1
        return
    immutable = [f.path for f in fields if f.path not in MUTABLE_PATHS]
    if immutable:
        reason = f"{origin}{', '.join(immutable)} cannot be changed in place: delete and import again (calls are not routed meanwhile)"
        out.changes.append(Change(spec.address, Action.REPLACE, reason, True, fields, spec.location, spec, entry))
        _check_replace_protected(spec, entry, immutable, out)
    else:
        reason = f"{origin}pipeline binding {', '.join(f.path for f in fields)} differs: update in place"
        if entry is not None and entry.get("pending"):
            reason = f"imported, but its pipeline binding {', '.join(f.path for f in fields)} was never set: update in place"
        out.changes.append(Change(spec.address, Action.UPDATE, reason, False, fields, spec.location, spec, entry))


def upgraded_phone_entry(
    spec: PhoneNumberSpec, entry: Mapping[str, Any], salt: str, forms: PhoneForms | None = None
) -> dict[str, Any] | None:
    """A number's ledger entry in the layout written before a secret allowed address (`${VAR}`)
    moved to its sorted index, in today's layout; None when it is not such an entry (or is today's).
    That code fingerprinted the item at the secret's declared index of the sorted list, kept the
    secret in clear at its sorted index and recorded the observed list in clear. Only an entry whose
    applied essence is exactly what that code wrote for this declaration (same values) is upgraded:
    any other difference is compared as usual. No API call: the next apply rewrites the entry."""
    if not any(p.startswith(ADDRESSES_ITEM) for p in spec.secrets):
        return None
    forms = forms if forms is not None else phone_forms(spec, salt)
    applied = entry.get("applied")
    if applied != forms.applied and applied != _applied_phone(
        spec.essence(), forms.write_only, declared_index_secrets(spec, forms.write_only), salt
    ):
        return None
    observed = entry.get("observed")
    items = observed.get(ADDRESSES) if isinstance(observed, Mapping) else None
    recorded = clear_items_fingerprinted(items, forms.secrets, salt) if type(items) is list else items
    if applied == forms.applied and recorded == items:
        return None  # today's layout
    upgraded = {**entry, "applied": dict(forms.applied)}
    if isinstance(observed, Mapping):
        upgraded["observed"] = {**observed, ADDRESSES: recorded}
    return upgraded


def _check_replace_protected(spec: PhoneNumberSpec, entry: Mapping[str, Any] | None, immutable: list[str], out: DiffResult) -> None:
    """`protect` is read from the declaration and from the ledger: switching it off takes an apply."""
    changed = ", ".join(immutable)
    if spec.protect:
        out.errors.append(f"{spec.address} is protected (protect: true) but the plan replaces it ({changed} changed)")
    elif entry is not None and entry.get("protect"):
        out.errors.append(
            f"{spec.address} is protected (protect: true when last applied) but the plan replaces it ({changed} changed); "
            "apply protect: false on its own first, then the change"
        )


def _owned_number_fields(
    spec: PhoneNumberSpec, live: Mapping[str, Any], entry: Mapping[str, Any], salt: str, forms: PhoneForms
) -> tuple[FieldChange, ...]:
    """Declaration vs what we last applied, plus drift: the API now vs what it showed after our last write."""
    secrets = forms.secrets
    applied = entry.get("applied") or {}
    if forms.plain and applied == forms.applied:
        observed = entry.get("observed")
        if isinstance(observed, Mapping):
            if quietly_in_sync(observed, live_form(live), forms.form, assumed=False):
                return ()
        elif quietly_in_sync(forms.form, live_form(live), forms.form, assumed=True):  # observed_legacy(applied) is the declared form
            return ()
    declared: list[FieldChange] = []
    if applied != forms.applied:  # in sync: no masks, no field walk
        masks = {**secrets, **{f"write_only.{p}": SENSITIVE for p in forms.write_only}, "write_only": SENSITIVE}
        declared = [_masked_before(f, applied, secrets, forms.form) for f in field_changes(dict(applied), forms.applied, masks)]
    changed = {f.path for f in declared}
    observed = entry.get("observed")
    assumed = not isinstance(observed, Mapping)
    if not isinstance(observed, Mapping):  # a ledger written before observed forms were recorded
        observed = observed_legacy(applied)
    if changed & set(MUTABLE_PATHS):
        changed.add(ASSOCIATED)
    shown_now = readable(live_form(live), forms.form)
    now = fingerprinted(shown_now, secrets, salt)
    drift = []
    for path in drifted(observed, now, assumed=assumed):
        if path in changed:
            continue
        if is_secret_path(path, secrets):
            drift.append(FieldChange(path, SENSITIVE, secret_display(path, secrets), sensitive=True, changed=True, origin=DRIFT))
        else:
            before, after = (
                _shown_items(shown_now[path], path, secrets, forms.form),
                _shown_items(observed[path], path, secrets, forms.form),
            )
            drift.append(FieldChange(path, before, after, origin=DRIFT))
    return tuple(sorted(declared + drift, key=lambda f: f.path))


def _masked_before(change: FieldChange, applied: Mapping[str, Any], secrets: Mapping[str, str], declared: Mapping[str, Any]) -> FieldChange:
    """The applied allowed addresses with an item equal to a declared secret one masked wherever it
    sits (a ledger written before the sorted index holds a secret in clear at another index)."""
    if change.path != ADDRESSES or change.sensitive or not any(p.startswith(ADDRESSES_ITEM) for p in secrets):
        return change
    before = flat_form(applied).get(ADDRESSES)
    if type(before) is not list:
        return change
    return FieldChange(change.path, _shown_items(before, ADDRESSES, secrets, declared), change.after, origin=change.origin)


def observed_legacy(applied: Mapping[str, Any]) -> dict[str, Any]:
    """The observed form assumed for an entry that has none: what was applied (readable part)."""
    form = {p: v for p, v in flat_form(applied).items() if not p.startswith("write_only.")}
    form[ASSOCIATED] = form.get("inbound_config.pipeline_id") or form.get("outbound_config.pipeline_id")
    return form


def _adoption_fields(spec: PhoneNumberSpec, live: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[FieldChange, ...]:
    declared = declared_form(spec)
    shown = readable(live_form(live), declared)
    out = []
    for path in adoption_differences(declared, live_form(live)):
        if is_secret_path(path, secrets):
            out.append(FieldChange(path, SENSITIVE, secret_display(path, secrets), sensitive=True, changed=True))
        else:
            out.append(FieldChange(path, _shown_items(shown[path], path, secrets, declared), _shown(declared[path], path, secrets)))
    return tuple(out)


def _shown_items(value: Any, path: str, secrets: Mapping[str, str], declared: Mapping[str, Any]) -> Any:
    """A value the API showed (or recorded), secrets masked. In a list with secret items (an allowed
    address from `${VAR}`), an item equal to a declared secret one is masked wherever it sits: the
    API's list is not the declared one, so the secret may be at another index than declared."""
    shown = _shown(value, path, secrets)
    if type(value) is not list or not any(p.startswith(path + "[") for p in secrets):
        return shown
    items = declared.get(path)
    hidden = {str(items[i]): secrets[f"{path}[{i}]"] for i in range(len(items)) if f"{path}[{i}]" in secrets} if type(items) is list else {}
    return [hidden.get(str(item), masked) for item, masked in zip(value, shown, strict=True)]


def _diff_numbers(
    desired: Desired, live: Live, ledger: Ledger, prune: bool, out: DiffResult, cache: DeclaredForms | None = None, now: float = 0.0
) -> None:
    declared = {n.phone_number: n for n in desired.phone_numbers}
    owned = ledger.of_kind(Kind.PHONE_NUMBER.value)
    for spec in desired.phone_numbers:
        _diff_number(spec, live.phone_numbers.get(spec.phone_number), owned.get(str(spec.address)), ledger.salt, out, cache)
    for number in sorted(set(live.phone_numbers) | {k.split("/", 1)[1] for k in owned}):
        if number in declared:
            continue
        address = Address(Kind.PHONE_NUMBER.value, number)
        entry = owned.get(str(address))
        in_account = number in live.phone_numbers
        if entry is not None and not in_account and entry.get("pending") and in_flight(entry.get("updated_at"), now):
            out.notes.append(
                f"{address}: its import may still be in flight (journaled {format_seconds(int(now - float(entry['updated_at'])))} ago) "
                f"and it is no longer declared: kept in the ledger until it settles, delete it with a later apply"
            )
            continue
        if entry is not None:
            reason = (
                "owned and no longer declared"
                if in_account
                else "no longer declared and already gone from the account: only the ledger entry is dropped"
            )
            out.changes.append(Change(address, Action.DELETE, reason, in_account, (), None, None, entry))
            if entry.get("protect"):
                out.errors.append(
                    f"{address} is protected (protect: true when last applied) but is no longer declared; declare it again, or set protect: false and apply before removing it"
                )
        elif prune:
            out.changes.append(Change(address, Action.DELETE, "not declared and prune: true", True, (), None, None, None))
        else:
            out.unmanaged.append(Unmanaged(Kind.PHONE_NUMBER.value, number))
