"""The demo's simulated recipients: people and machines reacting to what the tour sent.

Read from the outbox (the .eml files and the SMS JSON Lines), then played over real HTTP (an
aiohttp client, loopback only) against the daemon's own tracking server, and through its signed
``POST /conversions`` webhook: human opens (a browser fetching the pixel), Apple-MPP-like opens
(the bare ``Mozilla/5.0`` agent ``topslot.tracking.classify`` knows), a security gateway's HEAD on a
link, human clicks, one RFC 8058 one-click unsubscribe, orders with the recipients' coupon codes
(one with only the click id), and one refund. Seeded, bounded: the same tour every time.

Everything here is simulated; nothing leaves 127.0.0.1 (the redirects to the shop are never followed).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp

from topslot.attribution.webhook import signed_headers
from topslot.clock import FakeClock

SEED = 14
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
)
PHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
APPLE_MPP_UA = "Mozilla/5.0"  # Apple Mail Privacy Protection's proxy: exactly this, nothing else
SCANNER_UA = "Mozilla/5.0 (compatible; Barracuda Sentinel link protection)"
_LINK = re.compile(r"https?://[^\s\"'<>]+")
CENT = Decimal("0.01")
CATEGORIES = ("shoes", "bags", "accessories")  # the example campaign's costs.category_margins name two


@dataclass(slots=True)
class Received:
    """One message as its recipient sees it: the tracked paths in it and the coupon code."""

    delivery_id: int
    channel: str
    opens: list[str] = field(default_factory=list)  # /o/ paths (email pixel)
    clicks: list[str] = field(default_factory=list)  # /c/ or /s/ paths
    unsubscribe: str | None = None  # the List-Unsubscribe https URL's path (email)
    coupon: str | None = None


@dataclass(slots=True)
class Played:
    """What the simulated recipients did, as the server answered it."""

    human_opens: int = 0
    machine_opens: int = 0
    scanner_hits: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    orders: int = 0
    refunds: int = 0
    signups: int = 0
    recorded: int = 0  # conversions the webhook stored
    failed: list[str] = field(default_factory=list)  # unexpected HTTP answers


def read_outbox(outbox: Path, coupon_prefix: str | None) -> list[Received]:
    """Every message in the outbox, ordered by delivery id."""
    code = re.compile(rf"\b{re.escape(coupon_prefix)}[A-Z0-9]{{4,}}\b") if coupon_prefix is not None else None
    found: list[Received] = []
    new = outbox / "new"
    for path in sorted(new.glob("*")) if new.is_dir() else []:
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        ident = re.match(r"<d(\d+)\.", str(message.get("Message-ID", "")))
        if ident is None:
            continue
        got = Received(int(ident.group(1)), "email")
        html = message.get_body(("html",))
        plain = message.get_body(("plain",))
        texts = [part.get_content() for part in (html, plain) if part is not None]
        _take_links(got, _LINK.findall("\n".join(texts)))
        for value in _LINK.findall(str(message.get("List-Unsubscribe", ""))):
            if "/u/" in value:
                got.unsubscribe = urlsplit(value.rstrip(">,")).path
        if code is not None and (match := code.search("\n".join(texts))):
            got.coupon = match.group(0)
        found.append(got)
    sms = outbox / "sms.jsonl"
    if sms.is_file():
        for line in sms.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            got = Received(int(record["delivery_id"]), "sms")
            _take_links(got, _LINK.findall(record.get("body", "")))
            if code is not None and (match := code.search(record.get("body", ""))):
                got.coupon = match.group(0)
            found.append(got)
    return sorted(found, key=lambda r: r.delivery_id)


def _take_links(got: Received, urls: Iterable[str]) -> None:
    for url in urls:
        path = urlsplit(url.rstrip(".,)")).path
        bucket = got.opens if "/o/" in path else got.clicks if ("/c/" in path or "/s/" in path) else None
        if bucket is not None and path not in bucket:
            bucket.append(path)


async def play(
    server_url: str,
    received: list[Received],
    clock: FakeClock,
    webhook_key: str,
    currency: str,
    *,
    seed: int = SEED,
) -> Played:
    """Play the recipients against the tracking server at ``server_url`` (loopback)."""
    rng = random.Random(seed)
    done = Played()
    clock.advance(timedelta(hours=2))  # people read later than their mail arrives
    emails = [r for r in received if r.channel == "email"]
    orders: list[dict[str, object]] = []
    signups: list[dict[str, object]] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(server_url, timeout=timeout) as http:

        async def hit(method: str, path: str, agent: str, expect: int, **kwargs: object) -> aiohttp.ClientResponse:
            clock.advance(timedelta(minutes=rng.randint(3, 40)))  # never a burst, never a prefetch
            headers = {"User-Agent": agent}
            async with http.request(method, path, headers=headers, allow_redirects=False, **kwargs) as response:  # type: ignore[arg-type]
                await response.read()
                if response.status != expect:
                    done.failed.append(f"{method} {path[:3]}… → {response.status}")
                return response

        # A security gateway in front of a few mailboxes checks links on arrival (HEAD).
        for message in emails[:3]:
            if message.clicks:
                await hit("HEAD", message.clicks[0], SCANNER_UA, 302)
                done.scanner_hits += 1
        for message in received:
            roll = rng.random()
            if message.channel == "email" and message.opens:
                if roll < 0.35:  # an iPhone with Mail Privacy Protection: Apple's proxy fetches the pixel
                    await hit("GET", message.opens[0], APPLE_MPP_UA, 200)
                    done.machine_opens += 1
                if roll >= 0.25:  # and a person reads it (some of those behind MPP too)
                    await hit("GET", message.opens[0], BROWSER_UA, 200)
                    done.human_opens += 1
            reads = message.channel == "sms" or roll >= 0.25
            if not (reads and message.clicks and rng.random() < 0.6):
                continue
            response = await hit(
                "GET", rng.choice(message.clicks), PHONE_UA if message.channel == "sms" else BROWSER_UA, 302
            )
            done.clicks += 1
            tsid = parse_qs(urlsplit(response.headers.get("Location", "")).query).get("tsid", [None])[0]
            if tsid and rng.random() < 0.5:  # registers on the landing page: a signup credited by its click
                clock.advance(timedelta(minutes=rng.randint(1, 10)))
                signups.append(
                    {"kind": "signup", "user_id": f"SIM-U{len(signups) + 1:04d}", "click_id": tsid,
                     "occurred_at": clock.now().isoformat()}
                )  # fmt: skip
            if rng.random() < 0.7:
                orders.append(_order(rng, len(orders), message, tsid, currency, clock))
        # One reader has had enough: the mail client's one-click unsubscribe (RFC 8058).
        leaving = next((m for m in reversed(emails) if m.unsubscribe), None)
        if leaving is not None and leaving.unsubscribe is not None:
            await hit("POST", leaving.unsubscribe, BROWSER_UA, 200, data={"List-Unsubscribe": "One-Click"})
            done.unsubscribes += 1
        # A reader types the code from the message at the till, without clicking: credited by the coupon alone.
        typed = next(
            (m for m in emails if m.coupon and not any(o.get("coupon_code") == m.coupon for o in orders)), None
        )
        if typed is not None:
            orders.append(_order(rng, len(orders), typed, None, currency, clock))
        by_click = next((o for o in orders[1:] if o.get("click_id")), None)
        if by_click is not None:  # one shopper forgot the code: the order is credited by its click id
            by_click.pop("coupon_code", None)
        if signups:
            await _post_conversions(http, clock, webhook_key, signups, done)
            done.signups = len(signups)
        if orders:
            refunded = dict(orders[0], refund=True)
            refunded.pop("discount", None)
            await _post_conversions(http, clock, webhook_key, orders, done)
            clock.advance(timedelta(days=2))
            refunded["occurred_at"] = clock.now().isoformat()
            await _post_conversions(http, clock, webhook_key, [refunded], done)
            done.orders, done.refunds = len(orders), 1
    return done


def _order(
    rng: random.Random, index: int, message: Received, tsid: str | None, currency: str, clock: FakeClock
) -> dict[str, object]:
    """An order of 1–3 items with the recipient's code (20 % off), as the shop reports it."""
    clock.advance(timedelta(minutes=rng.randint(5, 90)))
    units = rng.randint(1, 3)
    list_price = Decimal(rng.randint(1800, 6500)) / 100 * units
    discount = (list_price * Decimal("0.20")).quantize(CENT)
    order: dict[str, object] = {
        "order_id": f"SIM-{index + 1:04d}",
        "category": rng.choice(CATEGORIES),
        "revenue": str(list_price - discount),
        "discount": str(discount),
        "units": units,
        "currency": currency,
        "occurred_at": clock.now().isoformat(),
    }
    if message.coupon:
        order["coupon_code"] = message.coupon
    if tsid:
        order["click_id"] = tsid
    return order


async def _post_conversions(
    http: aiohttp.ClientSession, clock: FakeClock, key: str, conversions: list[dict[str, object]], done: Played
) -> None:
    """Sign the body exactly as docs/tracking.md says (HMAC-SHA256 over "timestamp.body") and POST it."""
    body = json.dumps({"conversions": conversions}).encode("utf-8")
    headers = {"Content-Type": "application/json", **signed_headers(key, body, clock.now())}
    async with http.post("/conversions", data=body, headers=headers) as response:
        answer = await response.json()
        if response.status != 200:
            done.failed.append(f"POST /conversions → {response.status} {answer.get('error', '')}")
        done.recorded += int(answer.get("recorded", 0))
