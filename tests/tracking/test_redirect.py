from __future__ import annotations

import pytest

from topslot.tracking.redirect import UnsafeDestination, with_click_id


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://shop.example.com/", "https://shop.example.com/?tsid=TOK"),
        ("https://shop.example.com/p?a=1&b=2", "https://shop.example.com/p?a=1&b=2&tsid=TOK"),
        ("https://shop.example.com/p?a=1#frag?x", "https://shop.example.com/p?a=1&tsid=TOK#frag?x"),
        ("https://shop.example.com/p?tsid=old&a=1", "https://shop.example.com/p?a=1&tsid=TOK"),
        ("http://127.0.0.1:8000/p#", "http://127.0.0.1:8000/p?tsid=TOK#"),
    ],
)
def test_tsid_is_appended_keeping_query_and_fragment(url: str, expected: str) -> None:
    assert with_click_id(url, "TOK") == expected


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("javascript:alert(1)", "TOK"),
        ("//evil.example/", "TOK"),
        ("https://shop.example.com/\r\nSet-Cookie: x", "TOK"),
        ('https://shop.example.com/"><script>', "TOK"),
        ("https://shop.example.com/ a", "TOK"),
        ("https://shop.example.com/", "a&url=https://evil"),
        ("https://shop.example.com/", ""),
    ],
)
def test_unsafe_destinations_and_tokens_are_refused(url: str, token: str) -> None:
    with pytest.raises(UnsafeDestination):
        with_click_id(url, token)
