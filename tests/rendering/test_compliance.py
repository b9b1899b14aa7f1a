"""The 「广告」/AD subject prefix and the footer decision."""

from __future__ import annotations

import pytest

from daemon.rendering.compliance import ad_prefixed, footer_for, insert_before_body_end
from daemon.rendering.email_sources import ascii_markup
from daemon.settings import Compliance


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
