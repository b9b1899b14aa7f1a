"""Real people or machines: a label and a reason for every open and click (pure).

Labels:

- ``human``: nothing says otherwise (reason ``no_machine_signal``), or an open upgraded by a later
  human click of the same delivery (reason ``upgraded_by_click``);
- ``machine_open``: an image fetched by a mail proxy or privacy service, not by a person reading;
- ``scanner``: a click by a security gateway, link-preview bot or other automated client.

Open rules, first match wins: ``head_request``; ``proxy_agent:<name>`` (Gmail's GoogleImageProxy,
Yahoo's proxy, Apple Mail Privacy Protection's bare ``Mozilla/5.0``); ``proxy_network:<name>``;
``scanner_agent:<name>``; ``no_user_agent``; ``soon_after_delivery`` (within
``Rules.open_prefetch_window`` of the hand-over, as MPP and gateways prefetch on arrival).

Click rules, first match wins: ``head_request``; ``scanner_agent:<name>``; ``proxy_agent:<name>``;
``scanner_network:<name>``; ``no_user_agent``; ``soon_after_delivery`` (within
``Rules.click_scan_window``); ``link_burst`` (``Rules.burst_links`` different links of one message
clicked within ``Rules.burst_window``: a gateway following every link, not a reader).

The lists below are deliberately small and documented; extend them through ``Rules`` (the
defaults are public signatures of the big mailbox proxies and security gateways). Every raw
event is kept whatever its label, so a rule can be changed and the history relabelled.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

HUMAN = "human"
MACHINE_OPEN = "machine_open"
SCANNER = "scanner"
LABELS = (HUMAN, MACHINE_OPEN, SCANNER)
UPGRADED_BY_CLICK = "upgraded_by_click"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# (lower-case substring of the User-Agent, name): mailbox image proxies that fetch pixels.
PROXY_AGENTS: tuple[tuple[str, str], ...] = (
    ("googleimageproxy", "google_image_proxy"),  # Gmail: "... (via ggpht.com GoogleImageProxy)"
    ("yahoomailproxy", "yahoo_mail_proxy"),  # Yahoo/AOL: "YahooMailProxy; https://help.yahoo.com/..."
    ("ymailproxy", "yahoo_mail_proxy"),
    ("outlook-ios-imageproxy", "outlook_image_proxy"),
)
# Apple Mail Privacy Protection fetches with exactly this User-Agent and nothing else.
APPLE_MPP_AGENT = "mozilla/5.0"
# Networks of image proxies (Apple's own 17.0.0.0/8; Google's image proxy ranges).
PROXY_NETWORKS: tuple[tuple[str, str], ...] = (
    ("17.0.0.0/8", "apple"),
    ("66.102.0.0/20", "google_image_proxy"),
    ("66.249.80.0/20", "google_image_proxy"),
)
# (lower-case substring, name): security gateways, link checkers, preview bots, HTTP libraries.
SCANNER_AGENTS: tuple[tuple[str, str], ...] = (
    ("barracuda", "barracuda"),
    ("proofpoint", "proofpoint"),
    ("mimecast", "mimecast"),
    ("symantec", "symantec"),
    ("messagelabs", "symantec"),
    ("trendmicro", "trend_micro"),
    ("trend micro", "trend_micro"),
    ("forcepoint", "forcepoint"),
    ("ironport", "cisco"),
    ("fortiguard", "fortinet"),
    ("bitdefender", "bitdefender"),
    ("safelinks", "microsoft_safe_links"),
    ("microsoft office existence discovery", "microsoft_office"),
    ("ms-office", "microsoft_office"),
    ("urlscan", "urlscan"),
    ("virustotal", "virustotal"),
    ("facebookexternalhit", "link_preview"),
    ("whatsapp", "link_preview"),
    ("telegrambot", "link_preview"),
    ("slackbot", "link_preview"),
    ("discordbot", "link_preview"),
    ("skypeuripreview", "link_preview"),
    ("linkedinbot", "link_preview"),
    ("twitterbot", "link_preview"),
    ("headlesschrome", "headless_browser"),
    ("phantomjs", "headless_browser"),
    ("python-requests", "http_library"),
    ("python-urllib", "http_library"),
    ("python-httpx", "http_library"),
    ("aiohttp", "http_library"),
    ("go-http-client", "http_library"),
    ("okhttp", "http_library"),
    ("libwww-perl", "http_library"),
    ("curl/", "http_library"),
    ("wget/", "http_library"),
    ("java/", "http_library"),
    ("bot/", "bot"),
    ("crawler", "bot"),
    ("spider", "bot"),
    ("+http", "bot"),  # bots give a contact URL: "(compatible; Foo/1.0; +http://foo.example/bot)"
)
SCANNER_NETWORKS: tuple[tuple[str, str], ...] = ()


def _networks(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(net), name) for net, name in pairs)


class Signals(NamedTuple):
    """What a User-Agent says (memoised per agent string: agents repeat a lot)."""

    empty: bool
    apple_mpp: bool
    proxy: str | None  # name of a mailbox image proxy
    scanner: str | None  # name of a scanner / bot / library


@dataclass(frozen=True, slots=True)
class Rules:
    """Thresholds and signature lists; the defaults are the documented lists above."""

    open_prefetch_window: timedelta = timedelta(seconds=15)
    click_scan_window: timedelta = timedelta(seconds=5)
    burst_window: timedelta = timedelta(seconds=2)
    burst_links: int = 2
    proxy_agents: tuple[tuple[str, str], ...] = PROXY_AGENTS
    proxy_networks: tuple[tuple[Network, str], ...] = field(default_factory=lambda: _networks(PROXY_NETWORKS))
    scanner_agents: tuple[tuple[str, str], ...] = SCANNER_AGENTS
    scanner_networks: tuple[tuple[Network, str], ...] = field(default_factory=lambda: _networks(SCANNER_NETWORKS))
    memo_size: int = 10_000
    # memos of agent and address verdicts (not part of the rules' identity)
    _agents: dict[str | None, Signals] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)
    _ips: dict[str | None, tuple[str | None, str | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def agent(self, user_agent: str | None) -> Signals:
        found = self._agents.get(user_agent)
        if found is None:
            text = (user_agent or "").lower()
            found = Signals(
                empty=not text.strip(),
                apple_mpp=text.strip() == APPLE_MPP_AGENT,
                proxy=_match_agent(text, self.proxy_agents) if text else None,
                scanner=_match_agent(text, self.scanner_agents) if text else None,
            )
            if len(self._agents) >= self.memo_size:
                self._agents.clear()
            self._agents[user_agent] = found
        return found

    def network(self, ip: str | None) -> tuple[str | None, str | None]:
        """(proxy network name, scanner network name) of an address."""
        found = self._ips.get(ip)
        if found is None:
            found = (_match_network(ip, self.proxy_networks), _match_network(ip, self.scanner_networks))
            if len(self._ips) >= self.memo_size:
                self._ips.clear()
            self._ips[ip] = found
        return found


DEFAULT_RULES = Rules()


class Label(NamedTuple):
    label: str
    reason: str


NO_SIGNAL = Label(HUMAN, "no_machine_signal")


@dataclass(frozen=True, slots=True)
class Seen:
    """What the rules look at: one request."""

    kind: str  # open | click
    method: str
    user_agent: str | None
    ip: str | None
    occurred_at: datetime


def label_open(event: Seen, delivered_at: datetime | None, rules: Rules = DEFAULT_RULES) -> Label:
    """The label of an open; ``delivered_at``: when the message was handed over (None: unknown)."""
    if event.method == "HEAD":
        return Label(MACHINE_OPEN, "head_request")
    agent = rules.agent(event.user_agent)
    if agent.apple_mpp:
        return Label(MACHINE_OPEN, "proxy_agent:apple_mpp")
    if agent.proxy:
        return Label(MACHINE_OPEN, f"proxy_agent:{agent.proxy}")
    proxy_net, _ = rules.network(event.ip)
    if proxy_net:
        return Label(MACHINE_OPEN, f"proxy_network:{proxy_net}")
    if agent.scanner:
        return Label(MACHINE_OPEN, f"scanner_agent:{agent.scanner}")
    if agent.empty:
        return Label(MACHINE_OPEN, "no_user_agent")
    if _soon(event.occurred_at, delivered_at, rules.open_prefetch_window):
        return Label(MACHINE_OPEN, "soon_after_delivery")
    return NO_SIGNAL


def label_click(event: Seen, delivered_at: datetime | None, rules: Rules = DEFAULT_RULES) -> Label:
    """The label of a click on its own (``find_bursts`` looks at several clicks together)."""
    if event.method == "HEAD":
        return Label(SCANNER, "head_request")
    agent = rules.agent(event.user_agent)
    if agent.scanner:
        return Label(SCANNER, f"scanner_agent:{agent.scanner}")
    if agent.proxy:
        return Label(SCANNER, f"proxy_agent:{agent.proxy}")
    _, scanner_net = rules.network(event.ip)
    if scanner_net:
        return Label(SCANNER, f"scanner_network:{scanner_net}")
    if agent.empty:
        return Label(SCANNER, "no_user_agent")
    if _soon(event.occurred_at, delivered_at, rules.click_scan_window):
        return Label(SCANNER, "soon_after_delivery")
    return NO_SIGNAL


def label(event: Seen, delivered_at: datetime | None, rules: Rules = DEFAULT_RULES) -> Label:
    return label_click(event, delivered_at, rules) if event.kind == "click" else label_open(event, delivered_at, rules)


class Click(NamedTuple):
    """A click of one delivery, for burst detection; ``ref`` is the caller's handle on it."""

    ref: object
    link: object  # which link (any hashable: link id or key)
    occurred_at: datetime


def find_bursts(clicks: Sequence[Click], rules: Rules = DEFAULT_RULES) -> set[object]:
    """Refs of the clicks (of ONE delivery) that belong to a burst: ``rules.burst_links`` or more
    different links clicked within ``rules.burst_window`` of each other."""
    if rules.burst_links < 2 or len(clicks) < rules.burst_links:
        return set()
    ordered = sorted(clicks, key=lambda c: c.occurred_at)
    found: set[object] = set()
    links: dict[object, int] = {}  # link → clicks in the current window
    start = marked = 0
    for end, click in enumerate(ordered):
        links[click.link] = links.get(click.link, 0) + 1
        while click.occurred_at - ordered[start].occurred_at > rules.burst_window:
            gone = ordered[start].link
            links[gone] -= 1
            if not links[gone]:
                del links[gone]
            start += 1
        if len(links) >= rules.burst_links:
            found.update(c.ref for c in ordered[max(start, marked) : end + 1])
            marked = end + 1
    return found


class Open(NamedTuple):
    id: int
    delivery_id: int
    occurred_at: datetime
    label: str | None


def opens_to_upgrade(opens: Iterable[Open], human_clicks: Mapping[int, datetime]) -> list[int]:
    """Ids of the opens to relabel ``human`` (reason ``upgraded_by_click``): for each delivery with a
    human click (delivery id → time of its first human click) and no human open yet, the latest
    machine open before that click (or, if the image came later, the earliest one)."""
    by_delivery: dict[int, list[Open]] = {}
    for row in opens:
        if row.delivery_id in human_clicks:
            by_delivery.setdefault(row.delivery_id, []).append(row)
    chosen: list[int] = []
    for delivery_id, rows in sorted(by_delivery.items()):
        if any(r.label == HUMAN for r in rows):
            continue
        machine = sorted((r for r in rows if r.label == MACHINE_OPEN), key=lambda r: (r.occurred_at, r.id))
        if not machine:
            continue
        clicked = human_clicks[delivery_id]
        before = [r for r in machine if r.occurred_at <= clicked]
        chosen.append(before[-1].id if before else machine[0].id)
    return chosen


def _match_agent(agent: str, signatures: Sequence[tuple[str, str]]) -> str | None:
    for needle, name in signatures:
        if needle in agent:
            return name
    return None


def _match_network(ip: str | None, networks: Sequence[tuple[Network, str]]) -> str | None:
    if not ip or not networks:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for network, name in networks:
        if address.version == network.version and address in network:
            return name
    return None


def _soon(at: datetime, delivered_at: datetime | None, window: timedelta) -> bool:
    """Within ``window`` after the hand-over (an event stamped before it counts as soon, too)."""
    return delivered_at is not None and at - delivered_at <= window
