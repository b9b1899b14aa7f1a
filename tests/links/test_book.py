from __future__ import annotations

import pytest

from topslot.links import book as book_module
from topslot.links.book import LinkBook, LinkKeyCollision
from topslot.links.urls import InvalidLink, link_key, normalise_url


def test_add_gives_the_deterministic_key_and_records_it_once() -> None:
    book = LinkBook("spring")
    key, url = book.add("HTTPS://Shop.Example.com:443/p?x=1")
    assert (key, url) == (link_key("https://shop.example.com/p?x=1"), "https://shop.example.com/p?x=1")
    assert book.add("https://shop.example.com/p?x=1") == (key, url)  # another spelling, same link
    other, _ = book.add("https://shop.example.com/q")
    assert book.pending() == {key: url, other: "https://shop.example.com/q"}
    assert len(book) == 2


def test_saved_pairs_are_not_pending_again() -> None:
    book = LinkBook("spring")
    key, _ = book.add("https://a.example/")
    pending = book.pending()
    book.mark_saved(pending)
    assert book.pending() == {}
    book.add("https://a.example/")
    assert book.pending() == {}
    new, _ = book.add("https://b.example/")
    assert list(book.pending()) == [new] and key != new


def test_pending_is_a_copy() -> None:
    book = LinkBook("spring")
    book.add("https://a.example/")
    book.pending().clear()
    assert len(book.pending()) == 1


def test_a_key_collision_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(book_module, "link_key", lambda url: "0000000000000000")
    book = LinkBook("spring")
    book.add("https://a.example/")
    with pytest.raises(LinkKeyCollision):
        book.add("https://b.example/")


def test_memory_stays_bounded_with_per_recipient_urls() -> None:
    book = LinkBook("spring", max_entries=100)
    for i in range(1000):
        book.add(f"https://a.example/?r={i}")
        book.mark_saved(book.pending())
    assert len(book) <= 200 and len(book._by_url) <= 100
    key, url = book.add("https://a.example/?r=1")  # re-added after eviction: pending again, harmless
    assert url == normalise_url("https://a.example/?r=1") and key in book.pending()


def test_bad_links_are_refused() -> None:
    with pytest.raises(InvalidLink):
        LinkBook("spring").add("javascript:alert(1)")
