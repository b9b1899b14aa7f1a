"""The channel specs: addresses, suppression spellings, labels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from topslot.channel import CHANNELS, SPECS, spec_of


def contact(email: str | None = None, phone: str | None = None, im_ids: object = None) -> SimpleNamespace:
    return SimpleNamespace(email=email, phone=phone, im_ids=im_ids)


def test_each_channel_is_defined_once_in_order() -> None:
    assert CHANNELS == ("email", "sms", "im") == tuple(SPECS)
    assert [s.name for s in SPECS.values()] == list(CHANNELS)
    with pytest.raises(KeyError, match="unknown channel 'fax'; known: email, sms, im"):
        spec_of("fax")


def test_addresses_per_channel() -> None:
    c = contact(" A@B.example ", "+8613800138000", {"wechat": "wx1", "telegram": "", "line": 5})

    assert spec_of("email").address(c) == " A@B.example "
    assert spec_of("sms").address(c) == "+8613800138000"
    assert spec_of("im").address(c, "wechat") == "wechat:wx1"
    assert spec_of("im").address(c, "telegram") is None  # empty id
    assert spec_of("im").address(c) == "wechat:wx1"  # the first non-empty network by name ("line" is not text)
    assert spec_of("email").address({"email": "x@y.example"}) == "x@y.example"  # a row mapping works too


def test_suppression_addresses_per_channel() -> None:
    assert spec_of("email").all_addresses(contact(" A@B.example ")) == ["a@b.example"]
    assert spec_of("sms").all_addresses(contact(phone="+8613800138000")) == ["+8613800138000"]
    im = contact(im_ids={"wechat": "wx1", "telegram": "", "line": 5, "signal": "s1"})
    assert spec_of("im").all_addresses(im) == ["signal:s1", "wechat:wx1"]
    assert spec_of("email").all_addresses(contact(phone="+1")) == []
    assert spec_of("im").all_addresses(contact()) == []


def test_labels() -> None:
    assert [spec_of(c).count(1) for c in CHANNELS] == ["1 email", "1 SMS", "1 IM message"]
    assert [spec_of(c).count(2) for c in CHANNELS] == ["2 emails", "2 SMS", "2 IM messages"]


def test_a_phone_key_falls_back_to_the_phone() -> None:
    im = spec_of("im")
    assert im.address(contact(phone="+14155550101", im_ids={}), "whatsapp") == "whatsapp:+14155550101"
    assert im.address(contact(phone="+14155550101", im_ids={"whatsapp": "+8613800138000"}), "whatsapp") == (
        "whatsapp:+8613800138000"
    )
    assert im.address(contact(phone="+14155550101", im_ids={}), "telegram") is None  # not a phone network
