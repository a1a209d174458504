"""Attack on the in-sync shortcut of a number's diff (commit 12757a7): the whole diff (changes,
field changes, notes, errors, adoption) with the shortcut equals the diff with the shortcut off (the
full comparison), for API answers shaped in every way section 14 leaves open: configs null, empty
or without `pipeline_id`, extra server fields, `associated_pipeline` in other shapes, values of
other types (`1` for `true`, `"true"`), case and port changes of SIP addresses, reordered lists,
labels with combining characters and whitespace, ledger entries without an observed form
(legacy), pending, with another protect flag or a tampered observed value. The same generator,
run against the tool at 0755286 and at 12757a7 (30,000 cases), gave identical diffs."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.diff import applied_phone_essence, diff
from reconciler.ledger import Ledger
from reconciler.model import Desired, Live, PhoneNumberSpec, Settings
from reconciler.observed import observed_form

SALT = "00" * 16

ATOMS = [
    "x",
    "X",
    "",
    " x ",
    "é",
    "e\u0301",
    "1",
    1,
    1.0,
    True,
    False,
    None,
    0,
    "0",
    "true",
    "TLS",
    "tls",
    "udp",
    "Sip.Example.com",
    "sip.example.com:5061",
    "sip.example.com:5060",
    "user@sip.example.com",
    "USER@SIP.EXAMPLE.COM",
    "[::1]",
    "[::1]:5061",
    [],
    ["a"],
    {"k": 1},
    {},
]


def rnd_spec(r: random.Random) -> PhoneNumberSpec:
    inb = {}
    if r.random() < 0.7:
        inb["allowed_addresses"] = r.choice([["112.126.15.64/27"], ["10.0.0.0/8", "1.2.3.4"], ["1.2.3.4", "10.0.0.0/8"], []])
    outb = {}
    if r.random() < 0.8:
        outb["address"] = r.choice(
            [
                "sip.example.com",
                "Sip.Example.COM",
                "sip.example.com:5061",
                "user@sip.example.com",
                "[::1]",
                "[::1]:5061",
                " sip.example.com ",
            ]
        )
    if r.random() < 0.7:
        outb["transport"] = r.choice(["tls", "TLS", "udp", "tcp", None])
    for cfg in (inb, outb):
        if r.random() < 0.3:
            cfg[r.choice(["extra", "region", "headers", "x.y", "tok"])] = r.choice(ATOMS)
    if r.random() < 0.08:
        outb["auth_token"] = "literal-secret-value-123"
    if r.random() < 0.08:
        outb["password"] = "Sip-Pa55word-77"
    if r.random() < 0.05:
        outb["address"] = "user:Sip-Pa55word-77@sip.example.com"
    return PhoneNumberSpec(
        phone_number="+14155550100",
        provider=r.choice(["byo", "twilio", "BYO"]),
        label=r.choice(["Sales", "Sales ", "sales", "Sälës", "S\u0061\u0308les", "", "line\nbreak"]),
        inbound=r.random() < 0.85,
        outbound=r.random() < 0.85,
        inbound_config={k: v for k, v in inb.items() if v is not None} if r.random() < 0.9 else inb,
        outbound_config=outb,
        inbound_pipeline_id=r.choice(["pl_a", "pl_b", None]),
        outbound_pipeline_id=r.choice(["pl_a", "pl_c", None]),
        protect=r.random() < 0.2,
    )


def live_of(spec: PhoneNumberSpec) -> dict[str, Any]:
    item = {
        "phone_number": spec.phone_number,
        "provider": spec.provider,
        "label": spec.label,
        "inbound": spec.inbound,
        "outbound": spec.outbound,
        "inbound_config": {**spec.inbound_config, "pipeline_id": spec.inbound_pipeline_id},
        "outbound_config": {k: v for k, v in {**spec.outbound_config, "pipeline_id": spec.outbound_pipeline_id}.items() if k != "password"},
        "associated_pipeline": {"pipeline_id": spec.inbound_pipeline_id or spec.outbound_pipeline_id},
    }
    return item


def mutate_live(item: dict[str, Any], r: random.Random) -> dict[str, Any]:
    item = copy.deepcopy(item)
    for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
        m = r.randrange(14)
        cfg = r.choice(["inbound_config", "outbound_config"])
        if m == 0:
            item.pop(r.choice(list(item)), None)
        elif m == 1:
            item[cfg] = None
        elif m == 2 and isinstance(item.get(cfg), dict):
            item[cfg].pop("pipeline_id", None)
        elif m == 3 and isinstance(item.get(cfg), dict):
            item[cfg][r.choice(["id", "sip_domain", "extra", "transport", "address", "region"])] = r.choice(ATOMS)
        elif m == 4:
            item[r.choice(["label", "provider", "inbound", "outbound", "id"])] = r.choice(ATOMS)
        elif m == 5:
            item["associated_pipeline"] = r.choice(
                [None, {}, {"pipeline_id": None}, {"pipeline_id": "pl_a"}, {"pipeline_id": "pl_z"}, "pl_a"]
            )
        elif m == 6 and isinstance(item.get("outbound_config"), dict) and isinstance(item["outbound_config"].get("address"), str):
            a = item["outbound_config"]["address"]
            item["outbound_config"]["address"] = r.choice([a.lower(), a.upper(), a + ":5061", a + ":5060", " " + a])
        elif m == 7 and isinstance(item.get("inbound_config"), dict) and isinstance(item["inbound_config"].get("allowed_addresses"), list):
            item["inbound_config"]["allowed_addresses"] = list(reversed(item["inbound_config"]["allowed_addresses"])) + r.choice(
                [[], ["9.9.9.9"]]
            )
        elif m == 8:
            item["inbound"] = r.choice([1, 0, "true", None])
        elif m == 9 and isinstance(item.get(cfg), dict):
            item[cfg]["pipeline_id"] = r.choice(["pl_a", "pl_b", None, "PL_A"])
        elif m == 10 and isinstance(item.get(cfg), dict) and "transport" in item[cfg]:
            item[cfg]["transport"] = r.choice(["TLS", "tls", "udp", None])
        elif m == 11:
            item.pop("associated_pipeline", None)
        elif m == 12 and isinstance(item.get("outbound_config"), dict):
            item["outbound_config"]["password"] = "whatever"
        elif m == 13:
            item[cfg] = {}
    return item


def entry_of(spec: PhoneNumberSpec, live_item: dict[str, Any], r: random.Random) -> dict[str, Any]:
    e = {
        "kind": "phone_number",
        "applied": applied_phone_essence(spec, SALT),
        "observed": observed_form(spec, live_item, SALT),
        "protect": spec.protect,
        "updated_at": 1.0,
    }
    m = r.randrange(10)
    if m == 0:
        del e["observed"]
    elif m == 1:
        e["pending"] = True
        del e["observed"]
    elif m == 2:
        e["protect"] = not spec.protect
    elif m == 3 and e["observed"]:
        k = r.choice(sorted(e["observed"]))
        e["observed"][k] = r.choice(ATOMS)
    elif m == 4 and e["observed"]:
        del e["observed"][r.choice(sorted(e["observed"]))]
    elif m == 5:
        e["observed"]["outbound_config.transport"] = r.choice(["TLS", "udp"])
    elif m == 6:
        e["observed"] = None
    return json.loads(json.dumps(e))


def _outcome(r: random.Random) -> tuple[Desired, Live, Ledger]:
    spec = rnd_spec(r)
    led_spec = spec if r.random() < 0.75 else rnd_spec(r)
    live_spec = led_spec if r.random() < 0.6 else (spec if r.random() < 0.5 else rnd_spec(r))
    live_item = live_of(live_spec)
    observed_item = live_item if r.random() < 0.6 else mutate_live(live_item, r)
    now_item = observed_item if r.random() < 0.5 else mutate_live(observed_item, r)
    ledger = Ledger(salt=SALT)
    if r.random() < 0.9:
        ledger.resources["phone_number/+14155550100"] = entry_of(led_spec, observed_item, r)
    desired = Desired(phone_numbers=(spec,), agents=(), settings=Settings())
    live = Live(phone_numbers={spec.phone_number: json.loads(json.dumps(now_item))}, agents={})
    return desired, live, ledger


def _shown(desired: Desired, live: Live, ledger: Ledger) -> str:
    out = diff(desired, live, copy.deepcopy(ledger), now=100.0)
    return repr(
        (out.changes, [c.fields for c in out.changes], out.unchanged, out.errors, out.warnings, out.notes, out.adopted, out.unmanaged)
    )


@settings(max_examples=1500, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_the_in_sync_shortcut_never_changes_a_diff(r: random.Random) -> None:
    desired, live, ledger = _outcome(r)
    fast = _shown(desired, live, ledger)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("reconciler.diff.numbers.quietly_in_sync", lambda *args, **kwargs: False)
        full = _shown(desired, live, ledger)
    assert fast == full
