from __future__ import annotations

import pytest

from topslot.links.keys import Keyring
from topslot.links.short import sign_short
from topslot.links.tokens import MAX_DELIVERY_ID, MalformedToken, TokenError, WrongKind, sign, verify
from topslot.links.tracking import (
    MAX_MAILTO_LOCAL,
    InvalidTrackingBase,
    TrackingBase,
    click_id,
    mailto_domain,
    open_pixel_url,
    read_tracking_path,
    short_url,
    tracked_url,
    unsubscribe_mailto,
    unsubscribe_url,
)

LINK = "00112233445566ff"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"k1": b"tracking-test-key-0123456789"})


@pytest.mark.parametrize(
    ("url", "base", "host"),
    [
        ("https://t.shop.example.com", "https://t.shop.example.com", "t.shop.example.com"),
        ("https://t.shop.example.com/", "https://t.shop.example.com", "t.shop.example.com"),
        ("https://shop.example.com/track/", "https://shop.example.com/track", "shop.example.com"),
        ("https://T.Bücher.example:8443", "https://t.xn--bcher-kva.example:8443", "t.xn--bcher-kva.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "127.0.0.1"),
        ("http://localhost:8080/", "http://localhost:8080", "localhost"),
        ("http://[::1]:8080", "http://[::1]:8080", "::1"),
    ],
)
def test_tracking_base(url: str, base: str, host: str) -> None:
    parsed = TrackingBase.parse(url)
    assert (parsed.url, parsed.host) == (base, host)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://t.shop.example.com", "must be https"),
        ("http://10.0.0.5:8080", "must be https"),
        ("https://t.example.com/?a=1", "query or fragment"),
        ("https://t.example.com/#x", "query or fragment"),
        ("https://u:p@t.example.com", "user name"),
        ("ftp://t.example.com", "http"),
    ],
)
def test_bad_tracking_bases(url: str, message: str) -> None:
    with pytest.raises(InvalidTrackingBase, match=message):
        TrackingBase.parse(url)


def test_urls_carry_only_the_token(keyring: Keyring) -> None:
    base = TrackingBase.parse("https://t.example.com/x/")
    click, opened, unsub = sign(keyring, "click", 5, LINK), sign(keyring, "open", 5), sign(keyring, "unsubscribe", 5)

    assert tracked_url(base, click) == f"https://t.example.com/x/c/{click}"
    assert open_pixel_url(base, opened) == f"https://t.example.com/x/o/{opened}.gif"
    assert unsubscribe_url(base, unsub) == f"https://t.example.com/x/u/{unsub}"
    assert base.route_prefixes() == (
        "https://t.example.com/x/c/",
        "https://t.example.com/x/o/",
        "https://t.example.com/x/u/",
        "https://t.example.com/x/s/",
    )


def test_mailto_domain_defaults_to_the_tracking_host() -> None:
    assert mailto_domain(TrackingBase.parse("https://T.Example.com")) == "t.example.com"
    assert mailto_domain(TrackingBase.parse("http://127.0.0.1:8080")) == "[127.0.0.1]"
    assert mailto_domain(TrackingBase.parse("http://[::1]:8080")) == "[IPv6:::1]"
    assert mailto_domain(TrackingBase.parse("https://t.example.com"), "Mail.Shop.Example.") == "mail.shop.example"
    for bad in ("", "a b", "x@y", "-bad.example", "a..b"):
        with pytest.raises(InvalidTrackingBase):
            mailto_domain(TrackingBase.parse("https://t.example.com"), bad)


def test_mailto_local_part_fits_rfc_5321_even_in_the_worst_case() -> None:
    ring = Keyring({"k" * 12: b"tracking-test-key-0123456789"})
    worst = sign(ring, "unsubscribe", MAX_DELIVERY_ID)
    mailto = unsubscribe_mailto("t.example.com", worst)
    assert mailto == f"mailto:unsubscribe+{worst}@t.example.com"
    assert len(mailto.removeprefix("mailto:").split("@")[0]) <= MAX_MAILTO_LOCAL
    with pytest.raises(ValueError):
        unsubscribe_mailto("t.example.com", "x" * 60)


@pytest.mark.parametrize(
    ("kind", "link", "path"), [("click", LINK, "/c/{}"), ("open", None, "/o/{}.gif"), ("unsubscribe", None, "/u/{}")]
)
def test_read_tracking_path(keyring: Keyring, kind: str, link: str | None, path: str) -> None:
    token = sign(keyring, kind, 31337, link)
    claims = read_tracking_path(path.format(token), keyring)
    assert (claims.kind, claims.delivery_id, claims.link_key) == (kind, 31337, link)


def test_a_token_on_the_wrong_route_is_refused(keyring: Keyring) -> None:
    opened, unsub, click = sign(keyring, "open", 1), sign(keyring, "unsubscribe", 1), sign(keyring, "click", 1, LINK)
    for path in (f"/c/{opened}", f"/u/{opened}", f"/c/{unsub}", f"/u/{click}"):
        with pytest.raises(WrongKind):
            read_tracking_path(path, keyring)
    with pytest.raises(WrongKind):
        read_tracking_path(f"/o/{click}.gif", keyring)


def test_path_tricks_are_refused(keyring: Keyring) -> None:
    click, opened = sign(keyring, "click", 1, LINK), sign(keyring, "open", 1)
    for path in (
        f"/c/{click}?url=https://evil.example",
        f"/c/{click}/https://evil.example",
        f"/c/{click}/",
        f"/c//{click}",
        f"//c/{click}",
        f"c/{click}",
        f"/c/../c/{click}",
        f"/c/{click}%2F..",
        f"/C/{click}",
        f"/c/{click}.gif",
        f"/o/{opened}",
        f"/o/{opened}.GIF",
        f"/o/{opened}.gif.gif",
        f"/u/{click}.gif",
        f"/x/{click}",
        f"/c/{click}\n",
        f"/c/{click};x",
        "/c/",
        "",
        None,
    ):
        with pytest.raises(TokenError):
            read_tracking_path(path, keyring)  # type: ignore[arg-type]
    with pytest.raises(MalformedToken):
        read_tracking_path(f"/c/{click}?url=x", keyring)


def test_short_paths_are_clicks_and_carry_a_verifiable_click_id(keyring: Keyring) -> None:
    code = sign_short(keyring, 31337, LINK)
    base = TrackingBase.parse("https://t.example.com/x/")
    assert short_url(base, code) == f"https://t.example.com/x/s/{code}"
    claims = read_tracking_path(f"/s/{code}", keyring)
    assert (claims.kind, claims.delivery_id, claims.link_key) == ("click", 31337, LINK)
    tsid = click_id(f"/s/{code}", claims, keyring)
    assert tsid == sign(keyring, "click", 31337, LINK) and verify(tsid, keyring, "click") == claims
    token = sign(keyring, "click", 5, LINK)
    assert click_id(f"/c/{token}", read_tracking_path(f"/c/{token}", keyring), keyring) == token


def test_short_path_tricks_are_refused(keyring: Keyring) -> None:
    code, click = sign_short(keyring, 1, LINK), sign(keyring, "click", 1, LINK)
    for path in (f"/s/{code}.gif", f"/s/{code}/", f"/S/{code}", f"/s/{code}\n", f"/s/{click}", f"/c/{code}", "/s/"):
        with pytest.raises(TokenError):
            read_tracking_path(path, keyring)
