from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topslot.links.urls import InvalidLink
from topslot.links.utm import utm_params, with_utm

UTM = {"source": "topslot", "medium": "{channel}", "campaign": "mothers-day-2027"}


def test_names_get_the_prefix_once_and_channel_is_substituted() -> None:
    assert utm_params({"source": "ts", "utm_medium": "{channel}/{channel}", "term": "x"}, "sms") == [
        ("utm_source", "ts"),
        ("utm_medium", "sms/sms"),
        ("utm_term", "x"),
    ]


def test_same_name_written_both_ways_keeps_the_last() -> None:
    assert utm_params({"source": "a", "utm_source": "b"}, "im") == [("utm_source", "b")]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://shop.example.com/mothers-day",
            "https://shop.example.com/mothers-day?utm_source=topslot&utm_medium=email&utm_campaign=mothers-day-2027",
        ),
        # the existing query stays as written (order, encoding, a bare flag); the fragment stays last
        (
            "https://shop.example.com/p?b=2&a=%2F+x&flag#reviews",
            "https://shop.example.com/p?b=2&a=%2F+x&flag&utm_source=topslot&utm_medium=email"
            "&utm_campaign=mothers-day-2027#reviews",
        ),
        # the campaign wins: an existing utm_* of the same name is dropped (every copy), others kept
        (
            "https://shop.example.com/?utm_source=old&x=1&utm_source=older&utm_content=hero",
            "https://shop.example.com/?x=1&utm_content=hero&utm_source=topslot&utm_medium=email"
            "&utm_campaign=mothers-day-2027",
        ),
        # a name spelled with escapes is the same name
        (
            "https://shop.example.com/?utm%5Fsource=old",
            "https://shop.example.com/?utm_source=topslot&utm_medium=email&utm_campaign=mothers-day-2027",
        ),
        # ports: default dropped, others kept
        (
            "https://shop.example.com:443/a?",
            "https://shop.example.com/a?utm_source=topslot&utm_medium=email&utm_campaign=mothers-day-2027",
        ),
        (
            "http://shop.example.com:8080",
            "http://shop.example.com:8080/?utm_source=topslot&utm_medium=email&utm_campaign=mothers-day-2027",
        ),
        # IDN host and unicode path, query and fragment
        (
            "https://bücher.example/straße?q=süß#über",
            "https://xn--bcher-kva.example/stra%C3%9Fe?q=s%C3%BC%C3%9F&utm_source=topslot&utm_medium=email"
            "&utm_campaign=mothers-day-2027#%C3%BCber",
        ),
        # empty segments from '&&' disappear, nothing else
        (
            "https://a.example/?&x=1&&",
            "https://a.example/?x=1&utm_source=topslot&utm_medium=email&utm_campaign=mothers-day-2027",
        ),
    ],
)
def test_with_utm(url: str, expected: str) -> None:
    assert with_utm(url, UTM, "email") == expected


def test_values_are_percent_encoded() -> None:
    url = with_utm("https://a.example/", {"campaign": "母亲节 & more=50%#1", "content": "a+b/c"}, "sms")
    assert (
        url
        == "https://a.example/?utm_campaign=%E6%AF%8D%E4%BA%B2%E8%8A%82%20%26%20more%3D50%25%231&utm_content=a%2Bb%2Fc"
    )
    assert dict(parse_qsl(urlsplit(url).query)) == {"utm_campaign": "母亲节 & more=50%#1", "utm_content": "a+b/c"}


def test_no_utm_only_normalises() -> None:
    assert with_utm("HTTPS://A.example", {}, "email") == "https://a.example/"


def test_bad_urls_are_invalid_links() -> None:
    for bad in ("javascript:alert(1)", "https://u:p@a.example/", "https://[::1/"):
        with pytest.raises(InvalidLink):
            with_utm(bad, UTM, "email")


@given(
    values=st.dictionaries(
        st.sampled_from(["source", "medium", "campaign", "term", "content"]),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
        min_size=1,
    ),
    existing=st.lists(
        st.tuples(st.sampled_from(["utm_source", "utm_medium", "x", "y"]), st.text(max_size=10)), max_size=5
    ),
)
def test_every_utm_parameter_appears_exactly_once_with_its_value(values: dict, existing: list) -> None:
    url = with_utm(f"https://a.example/p?{urlencode(existing)}#frag", values, "email")

    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    for key, value in values.items():
        assert query[f"utm_{key}"] == [value.replace("{channel}", "email")]
    for key, _ in existing:
        if key.removeprefix("utm_") not in values:
            assert key in query
    assert url.endswith("#frag") and url.isascii()
