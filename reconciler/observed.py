"""The readable form of a phone number, for the three-way comparison (DESIGN.md section 3).

A phone number is compared as a flat mapping `dotted path -> value` ("form") over the fields the
user declared. The live form comes from `phone_numbers.list`/get, where a field may be missing
(unknown: never drift), extra (ignored: it is not declared) or normalised by the server. The ledger
records the *observed* form: the live form projected onto the declared paths right after our last
write, secrets fingerprinted. Drift is a recorded path whose live value differs from the observed
one. Bindings are read from `inbound_config.pipeline_id`/`outbound_config.pipeline_id` when the
API shows them, else from the single `associated_pipeline` (the inbound binding, else the outbound
one). Without a ledger entry (adoption) the declared and live forms are compared directly, on the
paths both have, with SIP addresses in a canonical form (case, default port).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import BINDING_PATHS, PhoneNumberSpec, is_secret_path
from .secrets import FINGERPRINT_PREFIX, SENSITIVE, fingerprint, strip_sip_password

ASSOCIATED = "associated_pipeline"
MUTABLE_PATHS = (*BINDING_PATHS, ASSOCIATED)
DEFAULT_SIP_PORTS = {"tls": 5061}
DEFAULT_SIP_PORT = 5060
SIP_ADDRESS = "outbound_config.address"
SIP_TRANSPORT = "outbound_config.transport"


def phone_secrets(spec: PhoneNumberSpec, write_only: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The paths of `spec` whose values are secret: declared `${VAR}`s and write-only values
    (`write_only`: `spec.write_only()` when the caller has it already)."""
    secrets = declared_index_secrets(spec, spec.write_only() if write_only is None else write_only)
    if any(path.startswith(ADDRESSES_ITEM) for path in secrets):
        _sorted_addresses(spec, secrets)
    return secrets


ADDRESSES = "inbound_config.allowed_addresses"
ADDRESSES_ITEM = ADDRESSES + "["


def declared_index_secrets(spec: PhoneNumberSpec, write_only: Mapping[str, Any]) -> dict[str, str]:
    """`phone_secrets` as the code before the sorted index placed them: a secret allowed address
    at its declared index. Ledger entries written then hold that layout (`diff.upgraded_phone_entry`)."""
    secrets = dict(spec.secrets)
    for path in write_only:
        secrets.setdefault(path, SENSITIVE)
    return secrets


def clear_items_fingerprinted(items: list[Any], secrets: Mapping[str, str], salt: str) -> list[Any]:
    """An observed allowed-address list with its secret items (sorted index) fingerprinted where
    they are still in clear, as the code before the sorted index recorded them."""
    return [
        fingerprint(salt, v)
        if is_secret_path(f"{ADDRESSES}[{i}]", secrets) and not (isinstance(v, str) and v.startswith(FINGERPRINT_PREFIX))
        else v
        for i, v in enumerate(items)
    ]


def _sorted_addresses(spec: PhoneNumberSpec, secrets: dict[str, str]) -> None:
    """Move the secret allowed addresses to their index in the essence, which sorts the list: at
    their declared index, a secret would be shown and kept in clear, and another item masked."""
    declared = spec.inbound_config.get("allowed_addresses")
    items = [str(item) for item in declared] if isinstance(declared, list) else []
    order = sorted(range(len(items)), key=items.__getitem__)  # the essence's sort: stable, by text
    moved = {f"{ADDRESSES}[{old}]": f"{ADDRESSES}[{new}]" for new, old in enumerate(order)}
    shown = {moved.get(path, path): secrets.pop(path) for path in [p for p in secrets if p.startswith(ADDRESSES_ITEM)]}
    secrets.update(shown)


_SCALARS = frozenset({str, int, float, bool, type(None), list})


def flat_form(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten(doc, prefix, out)
    return out


def _flatten(doc: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in doc.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if type(value) is dict or (type(value) not in _SCALARS and isinstance(value, Mapping)):  # no ABC check for plain values
            _flatten(value, path, out)
        else:
            out[path] = value


def declared_form(spec: PhoneNumberSpec, essence: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every declared path (defaults filled in) with its value, plus the implied `associated_pipeline`
    (`essence`: `spec.essence()` when the caller has it already)."""
    form = flat_form(spec.essence() if essence is None else essence)
    form[ASSOCIATED] = spec.inbound_pipeline_id or spec.outbound_pipeline_id
    return form


def _config_value(key: str, value: Any) -> Any:
    if key == "allowed_addresses" and isinstance(value, list):
        return sorted(str(a) for a in value)
    if key == "address" and isinstance(value, str):
        return strip_sip_password(value)
    return value


_CONFIG_PATHS: dict[tuple[str, Any], str] = {}  # (config, key) -> "config.key": the same few recur for every number


def live_form(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the API shows of a number, flat. Absent keys and `null` configs stay absent (unknown)."""
    out: dict[str, Any] = {}
    for key in ("provider", "label"):
        if key in item:
            out[key] = item[key]
    for key in ("inbound", "outbound"):
        if key in item and item[key] is not None:
            out[key] = bool(item[key])
    for config in ("inbound_config", "outbound_config"):
        raw = item.get(config)
        if type(raw) is dict or isinstance(raw, Mapping):
            for key, value in raw.items():
                if key == "password":
                    continue
                path = _CONFIG_PATHS.get((config, key))
                if path is None:
                    path = f"{config}.{key}"
                    if len(_CONFIG_PATHS) < 1024:  # whatever keys an API answer holds, this stays small
                        _CONFIG_PATHS[(config, key)] = path
                out[path] = _config_value(str(key), value) if key == "allowed_addresses" or key == "address" else value
    if ASSOCIATED in item:
        associated = item[ASSOCIATED]
        out[ASSOCIATED] = associated.get("pipeline_id") if isinstance(associated, Mapping) else None
    return out


def readable(live: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, Any]:
    """The declared paths the API shows. `associated_pipeline` only stands in for the bindings when
    neither config shows its `pipeline_id` (it cannot tell which binding it is otherwise)."""
    out = {p: live[p] for p in declared if p in live and p != ASSOCIATED}
    if ASSOCIATED in live and not any(p in live for p in BINDING_PATHS):
        out[ASSOCIATED] = live[ASSOCIATED]
    return out


def fingerprinted(form: Mapping[str, Any], secrets: Mapping[str, str], salt: str) -> dict[str, Any]:
    """A form with every secret value replaced by its salted fingerprint (what the ledger may hold)."""
    out = {p: fingerprint(salt, v) if is_secret_path(p, secrets) else v for p, v in form.items()}
    if not any("[" in p for p in secrets):  # no secret list item: nothing more to look for
        return out
    for path, value in out.items():  # a list whose items are secret (an allowed address from `${VAR}`)
        if type(value) is list and any(p.startswith(path + "[") for p in secrets):
            out[path] = [fingerprint(salt, v) if is_secret_path(f"{path}[{i}]", secrets) else v for i, v in enumerate(value)]
    return out


def observed_form(spec: PhoneNumberSpec, item: Mapping[str, Any], salt: str) -> dict[str, Any]:
    """The ledger's `observed`: what the API showed of `spec`'s declared paths, secrets fingerprinted."""
    return fingerprinted(readable(live_form(item), declared_form(spec)), phone_secrets(spec), salt)


def drifted(observed: Mapping[str, Any], live_now: Mapping[str, Any], *, assumed: bool = False) -> list[str]:
    """Recorded paths whose current (fingerprinted, readable) value differs. Missing = unknown.
    `assumed`: the observed form was not recorded but assumed from what was applied (a ledger
    from before observed forms), so server normalisations are forgiven as in adoption."""
    if assumed:
        merged = {**observed, **live_now}  # once, not once per path
        out = []
        for p, value in observed.items():
            if p not in live_now:
                continue
            now = live_now[p]
            if now == value and p != SIP_ADDRESS:  # equal values canonicalise equally (the address also reads the transport)
                continue
            if _canonical(p, now, merged) != _canonical(p, value, observed):
                out.append(p)
        return sorted(out)
    return sorted(p for p, value in observed.items() if p in live_now and live_now[p] != value)


def quietly_in_sync(observed: Mapping[str, Any], live: Mapping[str, Any], declared: Mapping[str, Any], *, assumed: bool) -> bool:
    """True only when `drifted(observed, fingerprinted(readable(live, declared), ...), assumed=...)`
    is certainly empty for a number none of whose paths is secret (no value is fingerprinted), worked
    out without building the readable form; False means "maybe drift": the full comparison decides.
    `live`: `live_form` of the API's item."""
    bindings_shown = BINDING_PATHS[0] in live or BINDING_PATHS[1] in live
    for path, value in observed.items():
        if path == ASSOCIATED:
            if bindings_shown or ASSOCIATED not in live:
                continue  # not readable: unknown, never drift
        elif path not in declared or path not in live:
            continue
        if live[path] != value:
            return False
        if assumed and path == SIP_ADDRESS and _shown_transport(live, declared, observed) != observed.get(SIP_TRANSPORT):
            return False  # equal addresses, but canonicalised against another transport
    return True


def _shown_transport(live: Mapping[str, Any], declared: Mapping[str, Any], observed: Mapping[str, Any]) -> Any:
    """The transport `drifted(assumed=True)` canonicalises a live address with (readable, else observed)."""
    return live[SIP_TRANSPORT] if SIP_TRANSPORT in declared and SIP_TRANSPORT in live else observed.get(SIP_TRANSPORT)


def canonical_sip(address: Any, transport: Any) -> Any:
    """`user@Host` -> `user@host:5061` (tls) / `:5060`: how a server may normalise an address."""
    if not isinstance(address, str):
        return address
    text = address.strip().lower()
    host = text.rsplit("@", 1)[-1]
    bracketed = host.startswith("[")
    if (bracketed and "]:" not in host) or (not bracketed and ":" not in host):
        port = DEFAULT_SIP_PORTS.get(str(transport or "").lower(), DEFAULT_SIP_PORT)
        text = f"{text}:{port}"
    return text


def _canonical(path: str, value: Any, form: Mapping[str, Any]) -> Any:
    if path == SIP_ADDRESS:
        return canonical_sip(value, form.get("outbound_config.transport"))
    if isinstance(value, str) and path.endswith(".transport"):
        return value.lower()
    return value


def adoption_differences(declared: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Declared paths the API shows with another value (canonical SIP addresses), for adoption."""
    shown = readable(live, declared)
    return sorted(
        p for p in shown if p in declared and _canonical(p, shown[p], {**declared, **shown}) != _canonical(p, declared[p], declared)
    )
