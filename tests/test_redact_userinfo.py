"""SIP userinfo passwords are masked by their shape, wherever they are in a text, however long the
text (issue 15: a big plan's output skips the userinfo search when it holds no `@`)."""

from __future__ import annotations

from reconciler.secrets import MASK, redact


def test_a_userinfo_password_is_masked_by_its_shape() -> None:
    assert redact("outbound_config.address: sip:alice:Unregistered-Pw-1@sip.example.com") == (
        f"outbound_config.address: sip:alice:{MASK}@sip.example.com"
    )
    assert redact("bob:pw-2@trunk.example.com, sips:carol:pw-3@x") == f"bob:{MASK}@trunk.example.com, sips:carol:{MASK}@x"


def test_a_long_text_is_masked_to_its_end_and_a_text_without_userinfo_is_unchanged() -> None:
    plain = '  + outbound_config.address: "sip.example.com"\n  + inbound: true\n' * 20000
    assert redact(plain) == plain
    assert redact(plain + "alice:Late-Pw-4@sip.example.com\n").endswith(f"alice:{MASK}@sip.example.com\n")
