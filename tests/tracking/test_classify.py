"""Labels: one test per rule, bursts, and open upgrades (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from topslot.tracking.classify import (
    HUMAN,
    MACHINE_OPEN,
    SCANNER,
    Click,
    Open,
    Rules,
    Seen,
    find_bursts,
    label,
    label_click,
    label_open,
    opens_to_upgrade,
)

SENT = datetime(2027, 5, 6, 7, 29, tzinfo=UTC)
LATER = SENT + timedelta(minutes=40)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def seen(
    kind: str = "open",
    ua: str | None = FIREFOX,
    at: datetime = LATER,
    method: str = "GET",
    ip: str | None = "198.51.100.7",
) -> Seen:
    return Seen(kind, method, ua, ip, at)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (seen(), (HUMAN, "no_machine_signal")),
        (seen(method="HEAD"), (MACHINE_OPEN, "head_request")),
        (seen(ua="Mozilla/5.0"), (MACHINE_OPEN, "proxy_agent:apple_mpp")),
        (
            seen(ua="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"),
            (MACHINE_OPEN, "proxy_agent:google_image_proxy"),
        ),
        (
            seen(ua="YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"),
            (MACHINE_OPEN, "proxy_agent:yahoo_mail_proxy"),
        ),
        (seen(ip="17.58.1.2"), (MACHINE_OPEN, "proxy_network:apple")),
        (seen(ip="66.249.84.10"), (MACHINE_OPEN, "proxy_network:google_image_proxy")),
        (seen(ua="Mozilla/5.0 (compatible; Barracuda Sentinel)"), (MACHINE_OPEN, "scanner_agent:barracuda")),
        (seen(ua=None), (MACHINE_OPEN, "no_user_agent")),
        (seen(at=SENT + timedelta(seconds=9)), (MACHINE_OPEN, "soon_after_delivery")),
        (seen(at=SENT - timedelta(seconds=1)), (MACHINE_OPEN, "soon_after_delivery")),  # stamped before hand-over
        (seen(at=SENT + timedelta(seconds=16)), (HUMAN, "no_machine_signal")),
    ],
)
def test_open_rules(event: Seen, expected: tuple[str, str]) -> None:
    assert tuple(label_open(event, SENT)) == expected
    assert tuple(label(event, SENT)) == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (seen("click"), (HUMAN, "no_machine_signal")),
        (seen("click", method="HEAD"), (SCANNER, "head_request")),
        (seen("click", ua="Mozilla/5.0 Proofpoint URL Defense"), (SCANNER, "scanner_agent:proofpoint")),
        (seen("click", ua="python-requests/2.32"), (SCANNER, "scanner_agent:http_library")),
        (seen("click", ua="facebookexternalhit/1.1"), (SCANNER, "scanner_agent:link_preview")),
        (
            seen("click", ua="Mozilla/5.0 (compatible; Foo/1.0; +http://foo.example/bot)"),
            (SCANNER, "scanner_agent:bot"),
        ),
        (seen("click", ua="Mozilla/5.0 (via ggpht.com GoogleImageProxy)"), (SCANNER, "proxy_agent:google_image_proxy")),
        (seen("click", ua=""), (SCANNER, "no_user_agent")),
        (seen("click", at=SENT + timedelta(seconds=3)), (SCANNER, "soon_after_delivery")),
        (seen("click", at=SENT + timedelta(seconds=6)), (HUMAN, "no_machine_signal")),
        (seen("click", ua="Mozilla/5.0"), (HUMAN, "no_machine_signal")),  # MPP's agent says nothing about clicks
    ],
)
def test_click_rules(event: Seen, expected: tuple[str, str]) -> None:
    assert tuple(label_click(event, SENT)) == expected
    assert tuple(label(event, SENT)) == expected


def test_unknown_hand_over_time_skips_only_the_timing_rule() -> None:
    assert label_click(seen("click", at=SENT), None).label == HUMAN
    assert label_click(seen("click", at=SENT, method="HEAD"), None).reason == "head_request"


def test_rules_are_configurable() -> None:
    import ipaddress

    rules = Rules(
        click_scan_window=timedelta(seconds=60),
        scanner_agents=(("acme-gateway", "acme"),),
        scanner_networks=((ipaddress.ip_network("192.0.2.0/24"), "acme"),),
    )
    assert label_click(seen("click", at=SENT + timedelta(seconds=30)), SENT, rules).reason == "soon_after_delivery"
    assert label_click(seen("click", ua="ACME-Gateway/2"), SENT, rules).reason == "scanner_agent:acme"
    assert label_click(seen("click", ip="192.0.2.55"), SENT, rules).reason == "scanner_network:acme"
    assert label_click(seen("click", ip="not-an-ip"), SENT, rules).label == HUMAN
    assert label_click(seen("click", ua="python-requests/2"), SENT, rules).label == HUMAN  # list replaced


def test_bursts_need_several_links_within_the_window() -> None:
    t = LATER
    every_link = [
        Click("a", 1, t),
        Click("b", 2, t + timedelta(milliseconds=300)),
        Click("c", 3, t + timedelta(seconds=1)),
    ]
    assert find_bursts(every_link) == {"a", "b", "c"}
    same_link_twice = [Click("a", 1, t), Click("b", 1, t + timedelta(milliseconds=200))]
    assert find_bursts(same_link_twice) == set()  # a double click is a person
    spread = [Click("a", 1, t), Click("b", 2, t + timedelta(seconds=3)), Click("c", 3, t + timedelta(seconds=9))]
    assert find_bursts(spread) == set()
    mixed = [Click("x", 1, t - timedelta(minutes=5)), Click("a", 2, t), Click("b", 3, t + timedelta(seconds=2))]
    assert find_bursts(mixed) == {"a", "b"}
    assert find_bursts(every_link, Rules(burst_links=4)) == set()


def test_an_open_is_upgraded_by_a_later_human_click() -> None:
    opens = [
        Open(1, 10, SENT + timedelta(seconds=1), MACHINE_OPEN),  # MPP prefetch
        Open(2, 10, SENT + timedelta(minutes=30), MACHINE_OPEN),  # Gmail proxy as the reader opened it
        Open(3, 11, SENT + timedelta(seconds=1), MACHINE_OPEN),  # delivery 11: no human click
        Open(4, 12, SENT + timedelta(minutes=5), HUMAN),  # delivery 12 already has a human open
        Open(5, 12, SENT + timedelta(minutes=1), MACHINE_OPEN),
        Open(6, 13, SENT + timedelta(hours=2), MACHINE_OPEN),  # images loaded only after the click
    ]
    clicks = {10: SENT + timedelta(minutes=31), 12: SENT + timedelta(minutes=6), 13: SENT + timedelta(hours=1)}
    assert opens_to_upgrade(opens, clicks) == [2, 6]
    assert opens_to_upgrade(opens, {}) == []
