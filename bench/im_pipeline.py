"""Benchmark: IM end to end through the webhook gateway against a fake gateway on loopback, side by
side in one run.

Targets (issue 11): with the rate limit off, topslot ≥ 0.5× a bare aiohttp client posting the same
requests; with a limit of R/s, the rate the gateway sees within 5 % of R.

One fake IM gateway (``tests/channels/fake_im_gateway.py``: a real aiohttp server that verifies
every request's HMAC signature and timestamp, requires the ``Idempotency-Key`` and a version 1
payload, and forwards each key once) runs in its own process on 127.0.0.1, so it does not share an
event loop with the measured sender. Measured, in one run, each sender in a fresh child process:

- **bare**: a plain ``aiohttp.ClientSession`` posting the same JSON payloads (``version``,
  ``provider``, ``delivery_id``, ``campaign_id``, ``recipient``, ``text``, ``card`` with title, link,
  button and coupon, ``sent_at``; texts and cards rendered from the campaign beforehand, not timed)
  with the same headers (``Idempotency-Key``, ``X-Topslot-Timestamp``, and the signature
  ``sha256=`` + HMAC-SHA256 of ``timestamp + "." + body``, serialised and signed per request, as the
  messenger does) and the same concurrency (``im.wecom.max_in_flight`` requests open, one
  connection each);
- **topslot, rate limit off** (1,000,000/s): a bucket of planned IM ledger rows (the example
  campaign's IM content through provider ``wecom``, a ``kind: webhook`` gateway: body
  ``mothers-day/im.txt.j2`` with a coupon, a card with title, button and a short tracked link) fired
  by the real ``BucketScheduler`` into the real ``DispatchService`` (claim → load → coupon
  reservation → render text and card → link records → mark sending → ``ImWebhook`` → record
  outcomes). Checked: every row ``sent``, every request verified, the fake forwarded exactly one
  message per recipient (no key twice, none refused), and the ledger's provider ids are exactly the
  gateway's ids;
- **topslot at R/s**: the same on a bucket big enough to last ≥ 10 s; the rate is the one the fake
  observed (requests over the span from the first to the last arrival), end to end shown too.

The bare and rate-off runs alternate (bare, topslot, bare, topslot ...) so a noisy neighbour hits
both; the figures are medians of ``--repeat`` runs. Each sender's CPU per message is printed too:
when both senders are CPU-bound (an idle machine) the throughput ratio tends to the ratio of those,
which a noisy neighbour barely moves, while the rates themselves swing with it.

Contacts carry ``im_ids = {"wecom": "<id>"}`` and IM consent; every other one has locale ``zh-CN``
(the template's Chinese text). The ledger is seeded once (not timed) and copied for every run
(SQLite), or re-seeded in a throwaway database (PostgreSQL). Everything stays on 127.0.0.1; the fake
is stopped at the end. The runner, the fake's process and the printout are ``bench/harness.py``'s,
shared with ``sms_pipeline.py``.

Last measured (2026-12-04, SQLite, uvloop, 2 shared cores on a busy day; docs/pipeline.md has the
tables): 4,000 messages, bare 4,369 msg/s, topslot 2,416 msg/s, **0.55×** (CPU 190 / 368 µs a
message; median of 5); 20,000 messages, 0.54× (median of 3); alternating with the code of the
morning (d0b0983), 0.48 / 0.49 / 0.54× against 0.40 / 0.46 / 0.41×. At 50/s the gateway saw
51.6 msg/s over 50 messages (a 1 s run; over 600 messages, 50.13).

    .venv/bin/python bench/im_pipeline.py                           # 20,000 messages; 600 at 50/s (12 s)
    .venv/bin/python bench/im_pipeline.py --messages 3000 --repeat 1
    .venv/bin/python bench/im_pipeline.py --rate 100 --rate-seconds 15
    .venv/bin/python bench/im_pipeline.py --profile /tmp/im.txt     # py-spy --gil, first topslot run
    .venv/bin/python bench/im_pipeline.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import statistics
import string
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import harness  # noqa: E402
import seeding  # noqa: E402
from harness import digest  # noqa: E402
from seeding import DUE, campaign_kit, recipient, seed_bucket  # noqa: E402

from topslot.campaign import Campaign  # noqa: E402
from topslot.settings import Settings  # noqa: E402

IN_FLIGHT = 20  # WebhookProvider.max_in_flight's default
PROVIDER = "wecom"
CAMPAIGN_ID = "bench-im"
PATH = "/send"  # the fake's path

# The fake's secret (tests/channels/fake_im_gateway.py's SECRET; no real gateway).
SECRET = "fake-gateway-secret-0123456789abcdef"

# What ImWebhook sends (daemon/channels/im_webhook.py), for the bare client to send the same.
USER_AGENT = "topslot-im-webhook/1"
CONTENT_TYPE = "application/json; charset=utf-8"


def im_id(i: int) -> str:
    return f"user{i:07d}"  # a WeCom user id, distinct for i < 10,000,000


def recipients_digest(n: int) -> str:
    """What the fake's digest of the recipients it forwarded messages to must be."""
    return digest(f"{PROVIDER}:{im_id(i)}" for i in range(n))


# ---------------------------------------------------------------- the campaign and its ledger


def bench_campaign() -> Campaign:
    """The example campaign (its IM template, coupon and landing page), IM only through ``wecom``,
    everyone in one 07:30 UTC bucket."""
    content = {
        "provider": PROVIDER, "body": "mothers-day/im.txt.j2",
        "title": "A gift for Mom, {{ contact.first_name }}", "button": "Shop the offer",
    }  # fmt: skip
    return seeding.bench_campaign(CAMPAIGN_ID, "im", content)


def bench_settings(
    var_dir: Path, port: int, rate: float, in_flight: int, processes: int = 1, url: str | None = None
) -> Settings:
    return seeding.bench_settings(
        var_dir, processes=processes, url=url, default_country="CN",
        im={
            PROVIDER: {
                "kind": "webhook", "url": f"http://127.0.0.1:{port}{PATH}", "secret": SECRET,
                "rate_per_second": rate, "max_in_flight": in_flight, "timeout_seconds": 15,
            }
        },
    )  # fmt: skip


def person(i: int) -> dict[str, Any]:
    return seeding.person(
        i, f"i{i}", country="CN", email=None, phone=None, locale="zh-CN" if i % 2 else "en", im_ids={PROVIDER: im_id(i)}
    )


async def seed(url: str, n: int) -> None:
    """Contacts with a WeCom id and IM consent, and one planned IM row each, all due at ``DUE``."""
    await seed_bucket(url, bench_campaign(), "im", person, n)


# ---------------------------------------------------------------- the fake gateway (its own process)


def serve_fake() -> None:
    """Run the fake IM gateway on 127.0.0.1 plus a control endpoint (GET /stats, POST /reset) until
    stdin closes; print one JSON line with both ports when ready."""
    sys.path.insert(0, str(REPO / "tests"))
    from channels.fake_im_gateway import FakeImGateway

    class TimedGateway(harness.TimedFake, FakeImGateway):
        def reset(self) -> None:
            super().reset()
            self.duplicates = 0

        def stats(self) -> dict[str, Any]:
            forwarded = Counter(m.to for m in self.messages.values())
            requested = Counter(r.key for r in self.requests)
            return {
                "requests": len(self.requests),
                "messages": len(self.messages),
                "distinct_to": len(forwarded),
                "requested_twice": sum(1 for c in requested.values() if c > 1),
                "duplicates": self.duplicates,
                "unverified": sum(1 for r in self.requests if not r.verified),
                "answered": {str(k): v for k, v in Counter(r.answered for r in self.requests).items()},
                "to_digest": digest(forwarded),
                "id_digest": digest(f"{PROVIDER}:{m.gateway_id}" for m in self.messages.values()),
                "headers": sorted({k for r in self.requests[:100] for k in r.headers}),
                "fields": sorted({k for r in self.requests[:100] for k in r.payload or {}}),
                "card": sorted({k for r in self.requests[:100] for k in (r.payload or {}).get("card") or {}}),
                "body_bytes": statistics.mean(len(r.body) for r in self.requests) if self.requests else 0,
                "chinese": sum(1 for m in self.messages.values() if "母亲节" in m.payload.get("text", "")),
                **self.arrival_stats(),
            }

    fake = TimedGateway(path=PATH)
    assert (fake.secret, fake.provider) == (SECRET, PROVIDER)
    harness.serve(fake)


# ---------------------------------------------------------------- the measured senders (child processes)


def sample_payloads(count: int = 50) -> list[dict[str, Any]]:
    """Payloads as topslot builds them for this campaign (text with a real coupon shape, card with
    title, button and short tracked link, in recipient ``i``'s language), for the bare client to send
    with each message's own ``delivery_id`` and ``recipient``."""
    from topslot.templating import contact_view

    kit = campaign_kit(bench_campaign(), lambda var_dir: bench_settings(var_dir, 1, 1.0, 1))
    sent_at = (DUE - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")  # topslot's (fake) clock
    rng = random.Random(11)
    payloads = []
    for i in range(count):
        coupon = "MOM" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=10))
        links = kit.links.for_delivery(i + 1, "im")
        contact = contact_view(recipient(person(i), CAMPAIGN_ID, "im"), DUE.date())
        text = kit.compiled.render_text("im", contact, coupon, links, "07:30")
        card = kit.compiled.render_card("im", contact, coupon, links, "07:30")
        assert card is not None
        payloads.append(
            {
                "version": 1, "provider": PROVIDER, "delivery_id": 0, "campaign_id": CAMPAIGN_ID, "recipient": "",
                "text": text,
                "card": {"title": card.title, "text": text, "link": card.link, "button": card.button, "coupon": coupon},
                "sent_at": sent_at,
            }
        )  # fmt: skip
    return payloads


async def bare_run(spec: dict[str, Any]) -> dict[str, Any]:
    """``in_flight`` workers on one aiohttp session post the signed JSON requests (serialised and
    signed per request); every answer must be a 200 with an id."""
    n, port, in_flight = spec["n"], spec["port"], spec["in_flight"]
    samples = sample_payloads()
    url = f"http://127.0.0.1:{port}{PATH}"
    payloads = [
        {**samples[i % len(samples)], "delivery_id": i + 1, "recipient": im_id(i)} for i in range(n)
    ]  # the delivery ids the ledger's rows get (seeded in order)
    secret = SECRET.encode()

    async def post(session: aiohttp.ClientSession, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(time.time()))
        signature = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": str(payload["delivery_id"]),
            "X-Topslot-Timestamp": timestamp,
            "X-Topslot-Signature": f"sha256={signature}",
        }
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            answer = await response.json()
            if response.status != 200 or not answer.get("id"):
                raise RuntimeError(f"bare: HTTP {response.status}: {answer}")
            return f"{PROVIDER}:{answer['id']}"

    return await harness.post_all(in_flight, payloads, post)


async def topslot_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Fire the bucket through the real scheduler and dispatch service; time it; count the states."""

    def settings(var_dir: Path, processes: int) -> Settings:
        return bench_settings(var_dir, spec["port"], spec["rate"], spec["in_flight"], processes, spec["url"])

    return await harness.topslot_run(spec, bench_campaign(), "im", settings)


# ---------------------------------------------------------------- checks


def check_fake(label: str, seen: dict[str, Any], n: int, id_digest: str) -> None:
    """Every request verified and answered 200; the fake forwarded exactly one message per
    recipient, each key requested once; the sender holds exactly the gateway's ids."""
    problems = []
    if seen["requests"] != n or seen["messages"] != n or seen["distinct_to"] != n:
        problems.append(
            f"{seen['requests']:,} requests, {seen['messages']:,} forwarded, {seen['distinct_to']:,} recipients"
        )
    if seen["unverified"]:
        problems.append(f"{seen['unverified']:,} requests failed the signature check")
    if seen["requested_twice"] or seen["duplicates"]:
        problems.append(f"{seen['requested_twice']:,} keys requested more than once")
    if seen["answered"] != {"200": n}:
        problems.append(f"answers {seen['answered']}")
    if seen["to_digest"] != recipients_digest(n):
        problems.append("not the seeded recipients")
    if seen["id_digest"] != id_digest:
        problems.append("the sender's ids are not the gateway's")
    if problems:
        sys.exit(f"{label}: expected {n:,} messages, one per recipient: " + "; ".join(problems))


def detail(seen: dict[str, Any]) -> str:
    headers = [h for h in seen["headers"] if h.startswith("X-") or h in ("Idempotency-Key", "User-Agent")]
    return (
        f"headers {', '.join(headers)}; payload {', '.join(seen['fields'])} (card: {', '.join(seen['card'])}); "
        f"body ~{seen['body_bytes']:.0f} bytes, {seen['chinese']:,} in Chinese"
    )


# ---------------------------------------------------------------- main

BENCH = harness.Bench(
    doc=__doc__ or "",
    script=__file__,
    title="IM pipeline",
    fake_name="fake IM gateway",
    peer="the gateway",
    in_flight=IN_FLIGHT,
    in_flight_setting=f"im.{PROVIDER}.max_in_flight",
    tmp_prefix="topslot-im-bench-",
    ids="gateway ids",
    seed=seed,
    serve_fake=serve_fake,
    runs={"bare": bare_run, "topslot": topslot_run},
    provider=PROVIDER,
    check_fake=check_fake,
    detail=detail,
)

if __name__ == "__main__":
    harness.main(BENCH)
