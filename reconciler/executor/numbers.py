"""The steps of a phone-number change: delete, update the bindings in place, and create or replace
(journaled as pending before `POST add`, so the number is owned from the moment the import
succeeds; then the binding PATCH; then the final entry with what the API showed).

A number's declared side (essence, write-only values, secrets, applied essence, declared form) is
worked out once per change (`diff.declared.phone_forms`) and serves the pending entry, the final
entry and its observed form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..diff import applied_phone_essence
from ..diff.declared import PhoneForms, phone_forms
from ..errors import ApiError, ConflictError, NotFoundError
from ..model import BINDING_PATHS, Kind, PhoneNumberSpec, is_secret_path
from ..observed import ASSOCIATED, MUTABLE_PATHS, adoption_differences, declared_form, fingerprinted, live_form, readable
from ..plan import Action, Change
from ..secrets import fingerprint
from .steps import TRANSIENT, Steps, drop, log, now

_CONFIGS = tuple(path.split(".")[0] for path in BINDING_PATHS)  # inbound_config, outbound_config


def imported_essence(spec: PhoneNumberSpec, forms: PhoneForms, salt: str) -> dict[str, Any]:
    """The applied essence of what `POST add` sends: `forms.applied` without the bindings, which
    is `applied_phone_essence` of the spec with both pipeline ids unset, without working it out
    again (a whole config that is secret is fingerprinted whole: then it is worked out again)."""
    secrets = forms.secrets
    if any(is_secret_path(config, secrets) for config in _CONFIGS):
        return applied_phone_essence(replace(spec, inbound_pipeline_id=None, outbound_pipeline_id=None), salt)
    out = dict(forms.applied)
    for config, path in zip(_CONFIGS, BINDING_PATHS, strict=True):
        out[config] = {**out[config], "pipeline_id": fingerprint(salt, None) if is_secret_path(path, secrets) else None}
    return out


def observed_of(forms: PhoneForms, answer: Mapping[str, Any], salt: str) -> dict[str, Any]:
    """`observed.observed_form` from the declared side already worked out."""
    return fingerprinted(readable(live_form(answer), forms.form), forms.secrets, salt)


class NumberSteps(Steps):
    def _pending_import(self, change: Change) -> tuple[dict[str, Any], PhoneForms]:
        """The pending entry of an import (create, replace), and the forms it was worked out from."""
        spec: PhoneNumberSpec = change.desired
        salt = self.journal.ledger.salt
        forms = phone_forms(spec, salt)
        pending = {
            "kind": Kind.PHONE_NUMBER.value,
            "pending": True,
            "applied": imported_essence(spec, forms, salt),
            "protect": spec.protect,
            "updated_at": now(),
        }
        return pending, forms

    def _apply_number(self, change: Change) -> None:
        address = str(change.address)
        number = change.key
        if change.action is Action.DELETE:
            if change.disruptive:  # "already gone": a list that lacks it is no proof, so never DELETE it
                self._delete_number(number)
            self.journal.record(lambda res: drop(res, address))
            return
        spec: PhoneNumberSpec = change.desired
        if change.action is Action.UPDATE:
            forms = phone_forms(spec, self.journal.ledger.salt)
            answer = self.client.update_number(number, self._binding_body(change, spec))
        else:
            forms = self._journal_import(change)  # before the delete of a replace too: the entry is never lost
            if change.action is Action.REPLACE:
                self._delete_number(number)
            answer = self._import_number(address, spec)
            body = {k: v for k, v in spec.bindings().items() if v["pipeline_id"] is not None}
            if body:
                answer = self.client.update_number(number, body)
        self._record_number(address, spec, forms, answer)

    @staticmethod
    def _binding_body(change: Change, spec: PhoneNumberSpec) -> dict[str, Any]:
        """The PATCH of an update: the changed bindings, or both when only `associated_pipeline`
        (which cannot tell them apart) shows the difference."""
        changed = {f.path.split(".")[0] for f in change.fields}
        if ASSOCIATED in changed:
            return spec.bindings()
        return {k: v for k, v in spec.bindings().items() if k in changed}

    def _delete_number(self, number: str) -> None:
        try:
            self.client.delete_number(number)
        except NotFoundError:
            log.info("phone number %s was already gone", number)

    def _journal_import(self, change: Change) -> PhoneForms:
        """Save the import as pending before `POST add`: from the moment the import succeeds the
        number is owned, even if its binding PATCH fails or the process dies. The entry holds what
        the import sends (bindings come after); the final entry replaces it once they are set.
        Workers importing at the same time share one write (`LedgerJournal.update`)."""
        address = str(change.address)
        pending, forms = self._pending_import(change)
        self.journal.update(lambda res: res.__setitem__(address, pending))
        return forms

    def _import_number(self, address: str, spec: PhoneNumberSpec) -> dict[str, Any]:
        """`POST add`; only a definite refusal (not a lost answer) drops the pending entry."""

        def attempt() -> dict[str, Any]:
            try:
                return self.client.add_number(spec.import_body())
            except ConflictError as exc:
                return self._adopt_existing(spec, exc)

        try:
            return self._checked(f"import of {spec.phone_number}", attempt)
        except ApiError as exc:
            if not isinstance(exc, TRANSIENT):  # refused: nothing of ours is in the account
                self.journal.record(lambda res: drop(res, address))
            raise

    def _adopt_existing(self, spec: PhoneNumberSpec, conflict: ConflictError) -> dict[str, Any]:
        """A 409 on import: if the number exists (an earlier attempt, or someone else) with the
        declared settings (bindings aside, SIP addresses compared canonically), adopt it."""
        try:
            doc = self.client.get_number(spec.phone_number)
        except NotFoundError:
            raise conflict from None  # not "already imported": locked, or a conflict we cannot resolve
        differences = [p for p in adoption_differences(declared_form(spec), live_form(doc)) if p not in MUTABLE_PATHS]
        if differences:
            raise ConflictError(
                f"{spec.address} is already imported with different {', '.join(differences)}; run plan again (it will be replaced if allowed)",
                status=409,
                api_reason="phone_number_exists",
            )
        log.info("%s already existed with the declared settings: adopted", spec.address)
        return doc

    def _record_number(self, address: str, spec: PhoneNumberSpec, forms: PhoneForms, answer: Mapping[str, Any] | None) -> None:
        """Record what was applied and what the API showed right after (a GET if the write's
        answer does not show the number)."""
        if not answer or answer.get("phone_number") != spec.phone_number:
            answer = self.client.get_number(spec.phone_number)
        entry = {
            "kind": Kind.PHONE_NUMBER.value,
            "applied": forms.applied,
            "observed": observed_of(forms, answer, self.journal.ledger.salt),
            "protect": spec.protect,
            "updated_at": now(),
        }
        self.journal.record(lambda res: res.__setitem__(address, entry))
