"""The ledger entries of a number create, worked out once per change (issue 15: CPU per API write):
the pending entry's applied essence and the final entry's observed form are exactly what the
essence functions give, for plain values, `${VAR}` secrets (a pipeline id among them) and SIP
passwords."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import config
from reconciler.diff import applied_phone_essence
from reconciler.diff.declared import phone_forms
from reconciler.executor.numbers import imported_essence, observed_of
from reconciler.model import PhoneNumberSpec
from reconciler.observed import observed_form

from .e2e import SECRET_SIP, number_spec

SALT = "5a17" * 8
ENV = {"INBOUND_PIPELINE": "pl_secret_in", "SIP_TRUNK": f"alice:{SECRET_SIP}@sip.example.com", "SIP_PASSWORD": SECRET_SIP}

NUMBERS = {
    "plain": number_spec("+14155550100"),
    "no bindings": number_spec("+14155550101", inbound_config={"allowed_addresses": ["10.0.0.0/8"]}, outbound_config={"address": "sip.x"}),
    "a secret pipeline id": number_spec(
        "+14155550102", inbound_config={"allowed_addresses": ["10.0.0.0/8"], "pipeline_id": "${INBOUND_PIPELINE}"}
    ),
    "a SIP password in the address": number_spec(
        "+14155550103", outbound_config={"address": "${SIP_TRUNK}", "transport": "tls", "pipeline_id": "pl_demo_sales"}
    ),
    "a SIP password": number_spec(
        "+14155550104", outbound_config={"address": "sip.example.com", "password": "${SIP_PASSWORD}", "pipeline_id": "pl_demo_sales"}
    ),
}


def _spec(tmp_path: Path, doc: dict[str, Any]) -> PhoneNumberSpec:
    path = tmp_path / "agora.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "phone_numbers": [doc]}, sort_keys=False))
    return config.load([str(path)], ENV).phone_numbers[0]


@pytest.mark.parametrize("case", sorted(NUMBERS))
def test_the_pending_import_holds_the_essence_of_what_post_add_sends(case: str, tmp_path: Path) -> None:
    spec = _spec(tmp_path, NUMBERS[case])
    forms = phone_forms(spec, SALT)
    expected = applied_phone_essence(replace(spec, inbound_pipeline_id=None, outbound_pipeline_id=None), SALT)
    assert imported_essence(spec, forms, SALT) == expected
    assert forms.applied == applied_phone_essence(spec, SALT), "and the forms are left as they were"
    assert SECRET_SIP not in repr(expected) and "pl_secret_in" not in repr(expected)


@pytest.mark.parametrize("case", sorted(NUMBERS))
def test_the_observed_form_is_the_one_observed_form_gives(case: str, tmp_path: Path) -> None:
    spec = _spec(tmp_path, NUMBERS[case])
    answer = {**spec.import_body(), **{k: {**getattr(spec, k), **v} for k, v in spec.bindings().items()}, "extra": 1}
    assert observed_of(phone_forms(spec, SALT), answer, SALT) == observed_form(spec, answer, SALT)
