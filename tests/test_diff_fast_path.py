"""The in-sync shortcut of a number's diff is exact: with it and without it, every field change
(declared or drift, legacy ledger entries included) comes out the same, for generated
declarations, ledger entries and API answers (derandomized: the same examples every run)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.diff.declared import _has_sensitive_keys, created_phone_fields, phone_forms
from reconciler.diff.fields import applied_phone_essence, created_fields, has_sensitive_keys
from reconciler.diff.numbers import _owned_number_fields, observed_legacy
from reconciler.model import PhoneNumberSpec, phone_essence
from reconciler.observed import ASSOCIATED, observed_form
from reconciler.plan import FieldChange

from .test_diff import live_number

SALT = "fast-path-salt"
ADDRESSES = ["sip.example.com", "SIP.Example.com", "sip.example.com:5061", "alice@sip.example.com", "alice:pw-1@sip.example.com"]
PIPELINES = [None, "pl_a", "pl_b"]


@st.composite
def specs(draw: Any) -> PhoneNumberSpec:
    inbound: dict[str, Any] = {}
    if draw(st.booleans()):
        inbound["allowed_addresses"] = draw(st.lists(st.sampled_from(["10.0.0.0/8", "112.126.15.64/27", "::1"]), max_size=2, unique=True))
    outbound: dict[str, Any] = {}
    if draw(st.booleans()):
        outbound["address"] = draw(st.sampled_from(ADDRESSES))
    if draw(st.booleans()):
        outbound["transport"] = draw(st.sampled_from(["tls", "tcp", "udp", "TLS"]))
    if draw(st.booleans()):
        outbound["prefix"] = draw(st.sampled_from(["9", "0123"]))
    secrets: dict[str, str] = {}
    if draw(st.integers(0, 4)) == 0:
        outbound["password"] = draw(st.sampled_from(["pw-secret-1", "pw-secret-2"]))
        if draw(st.booleans()):
            secrets["outbound_config.password"] = "${SIP_PASSWORD}"
    return PhoneNumberSpec(
        phone_number="+14155550100",
        provider=draw(st.sampled_from(["byo", "twilio"])),
        label=draw(st.sampled_from(["Sales", "Support"])),
        inbound=draw(st.booleans()),
        outbound=draw(st.booleans()),
        inbound_config=inbound,
        outbound_config=outbound,
        inbound_pipeline_id=draw(st.sampled_from(PIPELINES)),
        outbound_pipeline_id=draw(st.sampled_from(PIPELINES)),
        secrets=secrets,
    )


def listed(spec: PhoneNumberSpec) -> dict[str, Any]:
    """What the API lists for `spec` (password stripped, the SIP user's too), without `associated_pipeline`."""
    doc = live_number(spec)
    del doc["associated_pipeline"]
    return doc


@st.composite
def answers(draw: Any, spec: PhoneNumberSpec) -> dict[str, Any]:
    """What the API shows now: `spec` as listed, then drawn edits (drift, normalisations, missing keys)."""
    item = listed(spec)
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(
            st.sampled_from(
                ["label", "drop", "address", "transport", "associated", "hide-bindings", "associated-only", "addresses", "null-config"]
            )
        )
        if edit == "label":
            item["label"] = draw(st.sampled_from(["Sales", "Changed"]))
        elif edit == "drop":
            item.pop(draw(st.sampled_from(["label", "inbound", "outbound", "provider"])), None)
        elif edit == "address" and item["outbound_config"] is not None:
            item["outbound_config"]["address"] = draw(st.sampled_from(ADDRESSES))
        elif edit == "transport" and item["outbound_config"] is not None:
            item["outbound_config"]["transport"] = draw(st.sampled_from(["tls", "TLS", "udp"]))
        elif edit == "associated":
            item[ASSOCIATED] = draw(st.sampled_from([None, {"pipeline_id": "pl_a"}, {"pipeline_id": "pl_c"}]))
        elif edit in ("hide-bindings", "associated-only"):  # an API that shows only the associated pipeline
            if edit == "associated-only":
                item[ASSOCIATED] = draw(st.sampled_from([None, {"pipeline_id": "pl_a"}, {"pipeline_id": "pl_c"}]))
            for config in ("inbound_config", "outbound_config"):
                if item[config] is not None:
                    item[config].pop("pipeline_id", None)
        elif edit == "addresses" and item["inbound_config"] is not None:
            item["inbound_config"]["allowed_addresses"] = ["112.126.15.64/27", "10.0.0.0/8"]
        elif edit == "null-config":
            item[draw(st.sampled_from(["inbound_config", "outbound_config"]))] = None
    return item


@st.composite
def cases(draw: Any) -> tuple[PhoneNumberSpec, dict[str, Any], dict[str, Any]]:
    spec = draw(specs())
    applied_from = spec if draw(st.booleans()) else draw(specs())  # the declaration as last applied
    entry: dict[str, Any] = {"kind": "phone_number", "applied": applied_phone_essence(applied_from, SALT), "protect": False}
    observed = draw(st.sampled_from(["none", "as-applied", "other"]))
    if observed == "as-applied":
        entry["observed"] = observed_form(applied_from, listed(applied_from), SALT)
    elif observed == "other":
        entry["observed"] = observed_form(applied_from, draw(answers(applied_from)), SALT)
    return spec, entry, draw(answers(spec))


@settings(derandomize=True, max_examples=600, deadline=None)
@given(cases())
def test_the_in_sync_shortcut_changes_no_field(case: tuple[PhoneNumberSpec, dict[str, Any], dict[str, Any]]) -> None:
    spec, entry, item = case
    forms = phone_forms(spec, SALT)
    fast = _owned_number_fields(spec, item, entry, SALT, forms)
    full = _owned_number_fields(spec, item, entry, SALT, replace(forms, plain=False))
    assert fast == full


@settings(derandomize=True, max_examples=300, deadline=None)
@given(specs())
def test_a_plain_number_s_forms_are_its_general_forms(spec: PhoneNumberSpec) -> None:
    forms = phone_forms(spec, SALT)
    assert forms.plain == (not forms.secrets and not has_sensitive_keys(spec.essence()))
    assert forms.applied == applied_phone_essence(spec, SALT)
    if forms.plain:  # the shortcut's legacy comparison reads the declared form as observed_legacy(applied)
        assert observed_legacy(forms.applied) == forms.form


def test_in_sync_numbers_take_the_shortcut_and_drift_still_shows() -> None:
    spec = PhoneNumberSpec("+14155550100", "byo", "Sales", outbound_config={"address": "sip.example.com", "transport": "tls"})
    forms = phone_forms(spec, SALT)
    assert forms.plain
    entry = {"kind": "phone_number", "applied": applied_phone_essence(spec, SALT), "observed": observed_form(spec, listed(spec), SALT)}
    assert _owned_number_fields(spec, listed(spec), entry, SALT, forms) == ()
    drifted = {**listed(spec), "label": "Changed"}
    (change,) = _owned_number_fields(spec, drifted, entry, SALT, forms)
    assert (change.path, change.before, change.after, change.origin) == ("label", "Changed", "Sales", "drift")


def test_credential_named_keys_and_secrets_take_the_general_path() -> None:
    assert has_sensitive_keys({"a": [{"api_key": "x"}]})
    assert not has_sensitive_keys({"a": ["api_key"], "b": {"c": 1}})
    with_password = PhoneNumberSpec("+14155550100", "byo", "Sales", outbound_config={"password": "pw-secret"})
    assert not phone_forms(with_password, SALT).plain


@pytest.mark.parametrize(
    "essence",
    [
        PhoneNumberSpec("+14155550100", "byo", "Sales", outbound_config={"address": "sip.example.com", "user": "u"}).essence(),
        {**PhoneNumberSpec("+14155550100", "byo", "Sales").essence(), "label": {"token": "x"}},
        {**PhoneNumberSpec("+14155550100", "byo", "Sales").essence(), "inbound_config": {"api_key": "x", "pipeline_id": None}},
        {**PhoneNumberSpec("+14155550100", "byo", "Sales").essence(), "outbound_config": {"extra": [{"secret": "x"}]}},
        {**PhoneNumberSpec("+14155550100", "byo", "Sales").essence(), "outbound_config": {"extra": [["x"]]}},
        {"provider": "byo", "password": "x"},
    ],
)
def test_the_phone_essence_check_answers_as_the_general_walk(essence: dict[str, Any]) -> None:
    assert _has_sensitive_keys(essence) == has_sensitive_keys(essence)


def _shown(fields: tuple[FieldChange, ...]) -> list[str]:
    """Field changes with their values' types (`==` would take True for 1): what a renderer sees."""
    return [repr(f) for f in fields]


UNUSUAL: list[dict[str, Any]] = [
    {},
    {"extra": {"a": 1, "b": None}},
    {"extra": None},
    {"allowed_addresses": []},
    {"api_key": "k-123456789"},
    {"write_only": "w"},
    {"extra": [{"token": "t-123456789"}]},
    {"extra": [1, 2.5, True, None]},
    {"extra": {}},
]


@st.composite
def unusual_specs(draw: Any) -> PhoneNumberSpec:
    """`specs()` with configs of other shapes: nested mappings, nulls, empty lists, credential-named
    and `write_only` keys, a label that is not text."""
    spec = draw(specs())
    extra = draw(st.sampled_from(UNUSUAL))
    side = draw(st.sampled_from(["inbound_config", "outbound_config"]))
    label = draw(st.sampled_from([spec.label, 7, True, None, 'Sal\u00e9s "q"']))
    return replace(spec, label=label, **{side: {**getattr(spec, side), **extra}})


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.one_of(specs(), unusual_specs()))
def test_a_created_number_s_fields_are_the_general_walk_s(spec: PhoneNumberSpec) -> None:
    forms = phone_forms(spec, SALT)
    fast = created_phone_fields(spec, forms)
    assert _shown(fast) == _shown(tuple(created_fields(spec.essence(), forms.secrets)))
    assert _shown(created_phone_fields(spec)) == _shown(fast)  # without the forms: from the essence
    held = [v for section in forms.applied.values() if isinstance(section, dict) for v in section.values() if isinstance(v, list)]
    for field in fast:  # shown lists are copies, as masking makes them: never the forms' own
        assert all(field.after is not v for v in held)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.one_of(specs(), unusual_specs()))
def test_a_number_s_essence_is_phone_essence_of_its_declaration(spec: PhoneNumberSpec) -> None:
    document = {
        "provider": spec.provider,
        "label": spec.label,
        "inbound": spec.inbound,
        "outbound": spec.outbound,
        "inbound_config": {**spec.inbound_config, "pipeline_id": spec.inbound_pipeline_id},
        "outbound_config": {**spec.outbound_config, "pipeline_id": spec.outbound_pipeline_id},
    }
    assert json.dumps(spec.essence()) == json.dumps(phone_essence(document))  # the same keys in the same order
