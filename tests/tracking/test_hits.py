"""Outside input: header cleaning and the client IP behind trusted proxies (pure)."""

from __future__ import annotations

import pytest

from topslot.tracking.hits import MAX_HEADER_CHARS, clean_header, client_ip, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "::1"])


def test_headers_are_cut_first_and_controls_replaced() -> None:
    huge = "A" * 100_000
    assert clean_header(huge) == "A" * MAX_HEADER_CHARS
    assert clean_header("a\r\nSet-Cookie: x\x00y\x7f") == "a??Set-Cookie: x?y?"
    assert clean_header("  ") is None and clean_header(None) is None and clean_header("") is None
    undecodable = b"caf\xff".decode("utf-8", "surrogateescape")
    assert clean_header(undecodable) == "caf?"
    assert clean_header("<script>alert(1)</script>") == "<script>alert(1)</script>"  # data, escaped where shown


def test_client_ip_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    assert client_ip("198.51.100.1", "203.0.113.5", ()) == "198.51.100.1"
    assert client_ip("198.51.100.1", "203.0.113.5", TRUSTED) == "198.51.100.1"  # untrusted peer: header ignored
    assert client_ip("10.1.2.3", "203.0.113.5", TRUSTED) == "203.0.113.5"
    assert client_ip("10.1.2.3", "6.6.6.6, 203.0.113.5, 10.9.9.9", TRUSTED) == "203.0.113.5"  # rightmost untrusted
    assert client_ip("10.1.2.3", "garbage, 203.0.113.5", TRUSTED) == "203.0.113.5"
    assert client_ip("10.1.2.3", "203.0.113.5, <script>", TRUSTED) == "10.1.2.3"  # junk stops the walk
    assert client_ip("10.1.2.3", None, TRUSTED) == "10.1.2.3"
    assert client_ip("::1", "2001:db8::7", TRUSTED) == "2001:db8::7"
    assert client_ip("::ffff:10.0.0.1", "203.0.113.5", TRUSTED) == "203.0.113.5"
    assert client_ip(None, "203.0.113.5", TRUSTED) is None
    assert client_ip("10.1.2.3", ",".join(["10.0.0.1"] * 5000), TRUSTED) == "10.0.0.1"  # bounded walk


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match="not-a-net"):
        parse_networks(["10.0.0.0/8", "not-a-net"])
