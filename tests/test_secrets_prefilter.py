"""The cheap looks `redact` takes before its regular expressions never skip a mask: the registered
values are searched for one by one before the pattern runs, and the authorization-header pattern
only runs when the text holds "basic" or "token=" in some case (its IGNORECASE matching checked
against the regex engine for every code point). Generated texts (derandomized) are masked exactly
as the patterns alone mask them."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import secrets as S

SECRETS = ["sk-live-4f8a2b9c7d6e", 'Sip-Pa55word-\u00e9"q"', "tts-k\u00eay-\u2603-0042", "vendor/secret+value=&x"]
FRAGMENTS = [
    "Basic dXNlcjpwYXNzd29yZA==",
    "basic\tYWxpY2U6c2VjcmV0LXB3",
    "BA\u017fIC YWxpY2U6c2VjcmV0LXB3",
    "Bas\u0131c YWxpY2U6c2VjcmV0LXB3",
    "BAS\u0130C YWxpY2U6c2VjcmV0LXB3",
    "agora token=007eJxTYLh-abc",
    "AGORA\n TO\u212aEN=xyz",
    "Agora  token=",
    "Basic notbase64!!",
    "Basic c2hvcnQ=",
    '+ label: "Sal\u00e9s \u2014 \u6771\u4eac"',
    *SECRETS,
    *(s.replace("e", "E") for s in SECRETS),
]


def _reference(redactor: S.Redactor, text: str) -> str:
    """What `Redactor.redact` did before its look-ahead: the pattern of every registered form."""
    ordered = sorted(redactor._values, key=len, reverse=True)
    return re.compile("|".join(re.escape(v) for v in ordered)).sub(S.MASK, text) if ordered else text


texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=8).map(" ".join)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(texts, st.lists(st.sampled_from(SECRETS), max_size=3, unique=True))
def test_the_registered_values_are_masked_as_by_the_pattern_alone(text: str, registered: list[str]) -> None:
    redactor = S.Redactor()
    for secret in registered:
        redactor.register(secret)
    assert redactor.redact(text) == _reference(redactor, text)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(texts)
def test_the_header_pattern_is_skipped_only_where_it_cannot_match(text: str) -> None:
    if not S._may_hold_auth_header(text):
        assert S._AUTH_HEADER.sub(S._mask_auth, text) == text


def test_every_character_the_header_pattern_takes_for_a_letter_folds_to_that_letter() -> None:
    everything = "".join(map(chr, range(0x110000)))
    for letter in "basictoken=":
        for char in set(re.compile(re.escape(letter), re.IGNORECASE).findall(everything)):
            folded = char
            for extra, replacement in S._CASE_EXTRAS:
                folded = folded.replace(extra, replacement)
            assert letter in folded.lower(), f"{char!r} (U+{ord(char):04X}) matches {letter!r}"


def test_a_big_text_with_a_header_in_it_is_still_masked() -> None:
    text = "x" * 1_000_000 + " Authorization: Basic dXNlcjpwYXNzd29yZA== " + "y" * 1000
    assert "dXNlcjpwYXNzd29yZA==" not in S.redact(text)
    assert S.redact("agora TO\u212aEN=007xyzsecret") == "agora TO\u212aEN=***"
