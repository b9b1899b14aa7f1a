"""The 「广告」/AD subject prefix, the footer decision and the SMS opt-out line per country."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from topslot.errors import InvalidInput
from topslot.rendering.compliance import (
    ad_prefixed,
    footer_for,
    insert_before_body_end,
    recipient_country,
    with_opt_out,
)
from topslot.rendering.email_sources import ascii_markup
from topslot.settings import Compliance


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Sale", "【广告】Sale"),
        ("Adorable gifts", "【广告】Adorable gifts"),
        ("AD: sale", "AD: sale"),
        ("ad sale", "ad sale"),
        ("【广告】Sale", "【广告】Sale"),
    ],
)
def test_ad_prefix(subject: str, expected: str) -> None:
    assert ad_prefixed(subject, "【广告】") == expected


def test_footer_only_for_parts_that_lack_identity_or_address() -> None:
    compliance = Compliance(postal_address="1 Road · Town", sender_identity="Shop & Co")

    shown = footer_for(compliance, "<p>Shop &amp; Co, 1 Road &#183; Town</p>", "Shop & Co\n1 Road · Town")
    missing = footer_for(compliance, "<p>Shop</p>", "Shop")

    assert shown.html == "" and shown.text == ""
    assert "Shop &amp; Co &middot; 1 Road · Town" in missing.html
    assert missing.text == "\n-- \nShop & Co\n1 Road · Town\n"
    assert insert_before_body_end("<body>x</body>", "<i>f</i>") == "<body>x<i>f</i></body>"
    assert insert_before_body_end("<p>x</p>", "<i>f</i>") == "<p>x</p><i>f</i>"


def test_markup_becomes_ascii_except_styles_and_scripts() -> None:
    html = '<style>body { font-family: "微软雅黑" }</style><p title="café">Mother’s Day · 母亲节</p>'
    assert ascii_markup(html) == (
        '<style>body { font-family: "微软雅黑" }</style>'
        '<p title="caf&#233;">Mother&#8217;s Day &#183; &#27597;&#20146;&#33410;</p>'
    )


# ---------------------------------------------------------------- the SMS opt-out line


def test_sms_opt_out_defaults_and_lookup() -> None:
    compliance = Compliance()
    assert compliance.sms_opt_out == {"default": "Reply STOP to opt out", "CN": "回TD退订"}
    assert compliance.sms_opt_out_for("CN") == compliance.sms_opt_out_for(" cn ") == "回TD退订"
    assert compliance.sms_opt_out_for("US") == compliance.sms_opt_out_for(None) == "Reply STOP to opt out"


def test_sms_opt_out_settings_are_merged_normalised_and_checked() -> None:
    lines = Compliance(sms_opt_out={"Default": "Text STOP to quit", "fr": " STOP  au\n36111 ", "CN": ""}).sms_opt_out
    assert lines == {"default": "Text STOP to quit", "CN": "", "FR": "STOP au 36111"}
    for bad, message in (
        ({False: "x"}, "quote it"),  # YAML's NO (Norway)
        ({"USA": "x"}, "two-letter country code"),
        ({"C1": "x"}, "two-letter country code"),
        ({"US": 5}, "must be text"),
        ({"US": "x" * 101}, "longer than 100"),
    ):
        with pytest.raises(ValueError, match=message):
            Compliance(sms_opt_out=bad)


def test_sms_opt_out_from_yaml_and_environment(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from topslot.settings import load_settings

    (tmp_path / "topslot.yaml").write_text("compliance:\n  sms_opt_out:\n    'NO': Svar STOPP\n", encoding="utf-8")
    monkeypatch.setenv("TOPSLOT_COMPLIANCE__SMS_OPT_OUT__DE", "STOP zum Abbestellen")
    lines = load_settings(tmp_path).compliance.sms_opt_out
    assert lines["DE"] == "STOP zum Abbestellen" and lines["CN"] == "回TD退订"
    assert lines["NO"] == "Svar STOPP"
    (tmp_path / "topslot.yaml").write_text("compliance:\n  sms_opt_out: {NO: Svar STOPP}\n", encoding="utf-8")
    assert load_settings(tmp_path).compliance.sms_opt_out["NO"] == "Svar STOPP"  # keys are read as text
    (tmp_path / "topslot.yaml").write_text("compliance:\n  sms_opt_out: {Norway: Svar STOPP}\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="two-letter country code") as raised:
        load_settings(tmp_path)
    assert raised.value.problems[0].line == 2


@pytest.mark.parametrize(
    ("country", "phone", "expected"),
    [
        ("us", "+8613800138000", "US"),  # the contact's country wins
        (None, "+8613800138000", "CN"),
        ("", "+1 312 555 0120", "US"),
        (None, "+1 416 555 0120", "CA"),
        (None, "+999 123", None),
        (None, "not a number", None),
        (None, None, None),
    ],
)
def test_recipient_country(country: str | None, phone: str | None, expected: str | None) -> None:
    assert recipient_country(SimpleNamespace(country=country, phone=phone)) == expected


def test_with_opt_out() -> None:
    assert with_opt_out("Sale today", "Reply STOP to opt out") == "Sale today\nReply STOP to opt out"
    assert with_opt_out("Sale. REPLY STOP TO OPT OUT", "Reply STOP to opt out") == "Sale. REPLY STOP TO OPT OUT"
    assert with_opt_out("促销 回TD退订", "回TD退订") == "促销 回TD退订"
    assert with_opt_out("Sale", "") == "Sale"
    assert with_opt_out("", "回TD退订") == "回TD退订"
