from __future__ import annotations

import hashlib

import pytest

from topslot.links.urls import MAX_URL_CHARS, InvalidLink, link_key, normalise_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://shop.example.com/p?x=1#top", "https://shop.example.com/p?x=1#top"),
        ("HTTPS://Shop.Example.COM/Path", "https://shop.example.com/Path"),  # the path keeps its case
        ("https://shop.example.com", "https://shop.example.com/"),
        ("https://shop.example.com:443/a", "https://shop.example.com/a"),
        ("http://shop.example.com:80/a", "http://shop.example.com/a"),
        ("https://shop.example.com:8443/a", "https://shop.example.com:8443/a"),
        ("http://shop.example.com:443/a", "http://shop.example.com:443/a"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        (
            "https://例子.测试/商品?q=茶#说明",
            "https://xn--fsqu00a.xn--0zwm56d/%E5%95%86%E5%93%81?q=%E8%8C%B6#%E8%AF%B4%E6%98%8E",
        ),
        ("https://xn--bcher-kva.example/", "https://xn--bcher-kva.example/"),
        ("https://[2001:DB8:0:0::1]:8080/x", "https://[2001:db8::1]:8080/x"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("https://a.example/a b?c d", "https://a.example/a%20b?c%20d"),
        ("https://a.example/%41%2f?x=%E8%8C%B6", "https://a.example/%41%2f?x=%E8%8C%B6"),  # escapes kept
        ("https://a.example/100%?p=5%", "https://a.example/100%25?p=5%25"),
        ("https://a.example/a\\b", "https://a.example/a%5Cb"),
        ("https://a.example/?q=<script>\"'", "https://a.example/?q=%3Cscript%3E%22'"),
        ("  https://a.example/x  ", "https://a.example/x"),
        ("https://a.example/p?a=1&a=2&b=#f?g/h", "https://a.example/p?a=1&a=2&b=#f?g/h"),
        ("https://my_host.example/", "https://my_host.example/"),
    ],
)
def test_normalise(url: str, expected: str) -> None:
    assert normalise_url(url) == expected
    assert normalise_url(expected) == expected  # idempotent
    assert normalise_url(url).isascii()


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "mailto:a@example.com",
        "ftp://a.example/",
        "//a.example/x",
        "/relative",
        "https://",
        "https:///path",
        "https://user:pw@a.example/",
        "https://shop.example.com@evil.example/",
        "https://evil.example\\@shop.example.com/",
        "https://a.example:99999/",
        "https://a.example:port/",
        "https://[::1/",
        "https://xn--.example/",
        "https://a..example/",
        "https://a.example/\udcff",
        "https://" + "a" * 64 + ".example/",
        "https://a.example/" + "x" * MAX_URL_CHARS,
        None,
    ],
)
def test_refused(url: object) -> None:
    with pytest.raises(InvalidLink):
        normalise_url(url)  # type: ignore[arg-type]


def test_invalid_link_is_a_value_error_for_templates() -> None:
    with pytest.raises(ValueError):
        normalise_url("javascript:alert(1)")


def test_link_key_is_stable_and_short() -> None:
    a = link_key(normalise_url("HTTPS://Shop.Example.com:443"))
    assert a == link_key(normalise_url("https://shop.example.com/"))
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != link_key(normalise_url("https://shop.example.com/?utm_medium=sms"))
    assert a == hashlib.sha256(b"https://shop.example.com/").hexdigest()[:16]
