from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from topslot.campaign import Campaign
from topslot.links.factory import (
    PLACEHOLDER_TOKEN_CHARS,
    CampaignLinks,
    placeholder_short_track,
    placeholder_track,
)
from topslot.links.keys import Keyring
from topslot.links.short import SHORT_CODE_CHARS
from topslot.links.tokens import verify
from topslot.links.tracking import InvalidTrackingBase, read_tracking_path
from topslot.links.urls import InvalidLink, link_key
from topslot.yaml_source import load_yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "config/campaigns/mothers-day-2027.yaml"
BASE = "https://t.shop.example.com"
LANDING_EMAIL = (
    "https://shop.example.com/mothers-day?category=cosmetics"
    "&utm_source=topslot&utm_medium=email&utm_campaign=mothers-day-2027"
)


@pytest.fixture
def data() -> dict:
    return load_yaml(EXAMPLE).data


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"k1": b"factory-test-key-0123456789"})


def links_for(data: dict, keyring: Keyring, **tracking: bool) -> CampaignLinks:
    if tracking:
        data["tracking"] = tracking
    return CampaignLinks(Campaign.model_validate(data), keyring, BASE)


def path_of(url: str) -> str:
    return urlsplit(url).path


def test_track_signs_a_click_and_records_the_destination(data: dict, keyring: Keyring) -> None:
    links = links_for(data, keyring)
    msg = links.for_delivery(4242, "email")

    assert msg.landing_url == LANDING_EMAIL
    tracked = msg.track(msg.landing_url)

    assert tracked.startswith(f"{BASE}/c/") and "?" not in tracked
    assert "shop.example.com/" not in tracked.removeprefix(BASE)  # no destination: no open redirect
    claims = read_tracking_path(path_of(tracked), keyring)
    assert (claims.kind, claims.delivery_id) == ("click", 4242)
    assert links.book.pending() == {claims.link_key: LANDING_EMAIL}
    assert claims.link_key == link_key(LANDING_EMAIL)


def test_the_same_link_in_two_messages_has_one_key(data: dict, keyring: Keyring) -> None:
    links = links_for(data, keyring)
    a = links.for_delivery(1, "email").track("https://shop.example.com/faq")
    b = links.for_delivery(2, "email").track("HTTPS://SHOP.example.com:443/faq")
    ca, cb = (read_tracking_path(path_of(u), keyring) for u in (a, b))
    assert ca.link_key == cb.link_key and (ca.delivery_id, cb.delivery_id) == (1, 2) and a != b
    assert len(links.book.pending()) == 1


def test_channels_get_their_own_landing_url(data: dict, keyring: Keyring) -> None:
    links = links_for(data, keyring)
    sms = links.for_delivery(1, "sms")
    assert sms.landing_url == LANDING_EMAIL.replace("utm_medium=email", "utm_medium=sms")
    assert sms.open_pixel_url is None  # no pixel outside email
    sms.track(sms.landing_url)
    links.for_delivery(2, "email").track(LANDING_EMAIL)
    assert sorted(links.book.pending().values()) == sorted([LANDING_EMAIL, sms.landing_url])


def test_open_pixel_and_unsubscribe_links(data: dict, keyring: Keyring) -> None:
    msg = links_for(data, keyring).for_delivery(77, "email")

    pixel = msg.open_pixel_url
    assert pixel is not None and pixel.endswith(".gif")
    assert read_tracking_path(path_of(pixel), keyring).kind == "open"
    assert msg.unsubscribe_url.startswith(f"{BASE}/u/")
    unsub = read_tracking_path(path_of(msg.unsubscribe_url), keyring)
    assert (unsub.kind, unsub.delivery_id) == ("unsubscribe", 77)
    token = msg.unsubscribe_url.rsplit("/", 1)[1]
    assert msg.unsubscribe_mailto == f"mailto:unsubscribe+{token}@t.shop.example.com"
    assert verify(token, keyring, "unsubscribe").delivery_id == 77


def test_a_mail_domain_can_be_chosen(data: dict, keyring: Keyring) -> None:
    links = CampaignLinks(Campaign.model_validate(data), keyring, BASE, mail_domain="mail.shop.example.com")
    assert links.for_delivery(1, "email").unsubscribe_mailto.endswith("@mail.shop.example.com")


def test_tracking_urls_are_never_tracked_twice(data: dict, keyring: Keyring) -> None:
    links = links_for(data, keyring)
    msg = links.for_delivery(5, "email")
    tracked = msg.track(msg.landing_url)
    assert msg.track(tracked) == tracked
    assert msg.track(msg.unsubscribe_url) == msg.unsubscribe_url
    assert len(links.book.pending()) == 1
    # a look-alike host is not the tracking base
    lookalike = "https://t.shop.example.com.evil.example/c/x"
    assert msg.track(lookalike) != lookalike


def test_clicks_off_leaves_links_direct_but_unsubscribe_signed(data: dict, keyring: Keyring) -> None:
    links = links_for(data, keyring, clicks=False)
    msg = links.for_delivery(5, "email")
    assert msg.track("HTTPS://Shop.example.com/x") == "https://shop.example.com/x"
    assert links.book.pending() == {}
    assert msg.open_pixel_url is not None  # opens still on
    assert read_tracking_path(path_of(msg.unsubscribe_url), keyring).kind == "unsubscribe"


def test_opens_off_drops_only_the_pixel(data: dict, keyring: Keyring) -> None:
    msg = links_for(data, keyring, opens=False).for_delivery(5, "email")
    assert msg.open_pixel_url is None
    assert msg.track("https://shop.example.com/x").startswith(f"{BASE}/c/")


def test_a_contact_without_tracking_consent_is_not_tracked(data: dict, keyring: Keyring) -> None:
    links = links_for(data, keyring)
    msg = links.for_delivery(5, "email", tracking_allowed=False)
    assert msg.open_pixel_url is None
    assert msg.track("https://shop.example.com/x") == "https://shop.example.com/x"
    assert links.book.pending() == {}
    assert msg.unsubscribe_url.startswith(f"{BASE}/u/")


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "mailto:x@example.com", "/relative", "", None, 5, ["x"]])
def test_track_refuses_what_is_not_an_http_link(data: dict, keyring: Keyring, bad: object) -> None:
    msg = links_for(data, keyring).for_delivery(5, "email")
    with pytest.raises(InvalidLink):
        msg.track(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # what templates see
        msg.track(bad)  # type: ignore[arg-type]


def test_the_tracking_base_must_be_https_off_loopback(data: dict, keyring: Keyring) -> None:
    campaign = Campaign.model_validate(data)
    with pytest.raises(InvalidTrackingBase):
        CampaignLinks(campaign, keyring, "http://t.shop.example.com")
    demo = CampaignLinks(campaign, keyring, "http://127.0.0.1:8080").for_delivery(1, "email")
    assert demo.unsubscribe_url.startswith("http://127.0.0.1:8080/u/")
    assert demo.unsubscribe_mailto.endswith("@[127.0.0.1]")


def test_campaign_tracking_key(data: dict) -> None:
    assert Campaign.model_validate(data).tracking.opens is True
    data["tracking"] = {"opens": False}
    tracking = Campaign.model_validate(data).tracking
    assert (tracking.opens, tracking.clicks) == (False, True)
    for bad in ({"opens": "no"}, {"opens": 0}, {"pixel": False}):
        data["tracking"] = bad
        with pytest.raises(ValidationError):
            Campaign.model_validate(data)


@pytest.mark.parametrize(
    "url", ["https://user:pw@shop.example.com/", "https://shop.example.com:99999/", "https://a..example/"]
)
def test_a_landing_page_that_cannot_be_linked_fails_at_load(data: dict, url: str) -> None:
    data["landing_page"]["url"] = url
    with pytest.raises(ValidationError):
        Campaign.model_validate(data)


def test_sms_and_im_get_short_links_email_click_tokens(data: dict, keyring: Keyring) -> None:
    """``ChannelSpec.short_links``: an SMS or IM link is ``{base}/s/{26 characters}``, the same click."""
    links = links_for(data, keyring)
    sms = links.for_delivery(4242, "sms")
    tracked = sms.track(sms.landing_url)
    assert tracked.startswith(f"{BASE}/s/") and len(tracked) == len(BASE) + 3 + SHORT_CODE_CHARS
    claims = read_tracking_path(path_of(tracked), keyring)
    assert (claims.kind, claims.delivery_id, claims.link_key) == ("click", 4242, link_key(sms.landing_url))
    assert links.book.pending() == {claims.link_key: sms.landing_url}
    assert sms.track(tracked) == tracked  # never tracked twice
    assert links.for_delivery(4242, "im").track(sms.landing_url).startswith(f"{BASE}/s/")
    assert links.for_delivery(4242, "email").track(sms.landing_url).startswith(f"{BASE}/c/")


def test_short_links_fall_back_to_click_tokens_past_40_bit_delivery_ids(data: dict, keyring: Keyring) -> None:
    links = links_for(data, keyring)
    big = 2**40
    tracked = links.for_delivery(big, "sms").track("https://shop.example.com/x")
    assert tracked.startswith(f"{BASE}/c/") and read_tracking_path(path_of(tracked), keyring).delivery_id == big
    assert links.for_delivery(big - 1, "sms").track("https://shop.example.com/x").startswith(f"{BASE}/s/")


def test_sms_without_click_tracking_gets_the_plain_url(data: dict, keyring: Keyring) -> None:
    assert links_for(data, keyring, clicks=False).for_delivery(1, "sms").track("https://Shop.example.com/x") == (
        "https://shop.example.com/x"
    )
    untracked = links_for(data, keyring).for_delivery(1, "sms", tracking_allowed=False)
    assert untracked.track("https://shop.example.com/x") == "https://shop.example.com/x"


def test_placeholder_tracks_are_as_long_as_real_links(data: dict, keyring: Keyring) -> None:
    real = links_for(data, keyring).for_delivery(123_456, "sms").track("https://shop.example.com/x")
    fake = placeholder_track(BASE, "sms")("https://shop.example.com/x")
    assert fake == f"{BASE}/s/preview0000000000000000000" and len(fake) == len(real)
    assert placeholder_short_track(BASE + "/", "estimate")("https://shop.example.com/") == (
        f"{BASE}/s/estimate000000000000000000"
    )
    long = placeholder_track(BASE, "email")("https://shop.example.com/x")
    assert long.startswith(f"{BASE}/c/preview") and len(long) == len(BASE) + 3 + PLACEHOLDER_TOKEN_CHARS
    with pytest.raises(InvalidLink):
        placeholder_track(BASE, "sms")("javascript:alert(1)")
