"""Benchmark: SMS end to end against a fake Twilio on loopback, side by side in one run.

Targets (issue 10): with the rate limit off, topslot ≥ 0.5× a bare aiohttp client posting the same
requests; with a limit of R/s, the rate Twilio sees within 5 % of R.

One fake Twilio Messages API (``tests/channels/fake_twilio.py``: a real aiohttp server) runs in its
own process on 127.0.0.1, so it does not share an event loop with the measured sender. Measured, in
one run, each sender in a fresh child process:

- **bare**: a plain ``aiohttp.ClientSession`` posting the same form (``To``, ``From``, ``Body``,
  ``StatusCallback``; bodies rendered from the campaign beforehand, not timed) with the same basic
  auth and the same concurrency (``twilio.max_in_flight`` requests open, one connection each);
- **topslot, rate limit off** (1,000,000/s): a bucket of planned SMS ledger rows (the example
  campaign's SMS: coupon, short tracked link, opt-out line) fired by the real ``BucketScheduler``
  into the real ``DispatchService`` (claim → load → coupon reservation → render → link records →
  mark sending → ``TwilioSms`` → record outcomes). Checked: every row ``sent``, the fake created
  exactly one message per recipient (no request twice, none refused), and the ledger's provider
  ids are exactly the fake's message SIDs;
- **topslot at R/s**: the same on a bucket big enough to last ≥ 10 s; the rate is the one the fake
  observed (requests over the span from the first to the last arrival), end to end shown too.

The bare and rate-off runs alternate (bare, topslot, bare, topslot ...) so a noisy neighbour hits
both; the figures are medians of ``--repeat`` runs. Each sender's CPU per message is printed too:
when both senders are CPU-bound (an idle machine) the throughput ratio tends to the ratio of those,
which a noisy neighbour barely moves, while the rates themselves swing with it.

The ledger is seeded once (contacts, SMS consents, planned rows; not timed) and copied for every
run (SQLite), or re-seeded in a throwaway database (PostgreSQL). Everything stays on 127.0.0.1; the
fake is stopped at the end.

Last measured (2026-12-03, 4,000 messages, SQLite, uvloop, 2 shared cores; docs/pipeline.md has
the tables): bare 4,395 msg/s, topslot 2,534 msg/s, 0.58× (CPU 196 / 352 µs a message; median of
5), against 0.38× and 0.42× (CPU 500 and 431 µs) for the code of the day before, alternating on the
same machine. At 50/s Twilio saw 50.13 msg/s (+0.26 %).

    .venv/bin/python bench/sms_pipeline.py                          # 20,000 messages; 600 at 50/s (12 s)
    .venv/bin/python bench/sms_pipeline.py --messages 3000 --repeat 1
    .venv/bin/python bench/sms_pipeline.py --rate 100 --rate-seconds 15
    .venv/bin/python bench/sms_pipeline.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import random
import statistics
import string
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import harness  # noqa: E402
import seeding  # noqa: E402
from harness import digest  # noqa: E402
from seeding import DUE, TRACKING, campaign_kit, recipient, seed_bucket  # noqa: E402

from topslot.campaign import Campaign  # noqa: E402
from topslot.settings import Settings  # noqa: E402
from topslot.store.schema import deliveries  # noqa: E402

CAMPAIGN_ID = "bench-sms"
IN_FLIGHT = 20  # TwilioSettings.max_in_flight's default

# The fake's identity (tests/channels/fake_twilio.py's defaults; no real account, no real token).
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"
FROM_NUMBER = "+15017122661"


def phone(i: int) -> str:
    return f"+1415{i:07d}"  # E.164, distinct for i < 10,000,000


def numbers_digest(n: int) -> str:
    """What the fake's digest of the ``To`` it created messages for must be."""
    return digest(phone(i) for i in range(n))


# ---------------------------------------------------------------- the campaign and its ledger


def bench_campaign() -> Campaign:
    """The example campaign (its SMS template, coupon and landing page), SMS only, everyone in one
    07:30 UTC bucket."""
    return seeding.bench_campaign(CAMPAIGN_ID, "sms")


def bench_settings(
    var_dir: Path, port: int, rate: float, in_flight: int, processes: int = 1, url: str | None = None
) -> Settings:
    return seeding.bench_settings(
        var_dir, processes=processes, url=url,
        twilio={
            "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER,
            "base_url": f"http://127.0.0.1:{port}", "rate_per_second": rate, "max_in_flight": in_flight,
            "timeout_seconds": 15, "status_callbacks": True,
        },
    )  # fmt: skip


def person(i: int) -> dict[str, Any]:
    return seeding.person(i, f"s{i}", email=None, phone=phone(i))


async def seed(url: str, n: int) -> None:
    """Contacts with a phone and SMS consent, and one planned SMS row each, all due at ``DUE``."""
    await seed_bucket(url, bench_campaign(), "sms", person, n)


# ---------------------------------------------------------------- the fake Twilio (its own process)


def serve_fake() -> None:
    """Run the fake Twilio on 127.0.0.1 plus a control endpoint (GET /stats, POST /reset) until
    stdin closes; print one JSON line with both ports when ready."""
    sys.path.insert(0, str(REPO / "tests"))
    from channels.fake_twilio import FakeTwilio

    class TimedTwilio(harness.TimedFake, FakeTwilio):
        def stats(self) -> dict[str, Any]:
            created = Counter(m.to for m in self.messages.values())
            requested = Counter(r.to for r in self.requests)
            return {
                "requests": len(self.requests),
                "messages": len(self.messages),
                "distinct_to": len(created),
                "requested_twice": sum(1 for c in requested.values() if c > 1),
                "answered": {str(k): v for k, v in Counter(r.answered for r in self.requests).items()},
                "to_digest": digest(created),
                "sid_digest": digest(self.messages),
                "fields": sorted({k for r in self.requests for k in r.form}),
                "body_chars": statistics.mean(len(m.body) for m in self.messages.values()) if self.messages else 0,
                "segments": {str(k): v for k, v in Counter(m.num_segments for m in self.messages.values()).items()},
                **self.arrival_stats(),
            }

    fake = TimedTwilio()
    assert (fake.account_sid, fake.auth_token, fake.phone_number) == (ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER)
    harness.serve(fake)


# ---------------------------------------------------------------- the measured senders (child processes)


def sample_bodies(count: int = 50) -> list[str]:
    """SMS bodies as topslot renders them for this campaign (real coupon shape, short tracked link,
    opt-out line), for the bare client to send."""
    from topslot.templating import contact_view

    kit = campaign_kit(bench_campaign(), lambda var_dir: bench_settings(var_dir, 1, 1.0, 1))
    rng = random.Random(10)
    bodies = []
    for i in range(count):
        coupon = "MOM" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=10))
        links = kit.links.for_delivery(i + 1, "sms")
        contact = contact_view(recipient(person(i), CAMPAIGN_ID, "sms"), DUE.date())
        bodies.append(kit.compiled.render_text("sms", contact, coupon, links, "07:30"))
    return bodies


async def bare_run(spec: dict[str, Any]) -> dict[str, Any]:
    """``in_flight`` workers on one aiohttp session post the create requests; every answer must be a
    201 with a SID."""
    n, port, in_flight = spec["n"], spec["port"], spec["in_flight"]
    bodies = sample_bodies()
    url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    forms = [
        {
            "To": phone(i),
            "Body": bodies[i % len(bodies)],
            "From": FROM_NUMBER,
            "StatusCallback": f"{TRACKING}/twilio/status",
        }
        for i in range(n)
    ]
    auth = aiohttp.BasicAuth(ACCOUNT_SID, AUTH_TOKEN)

    async def post(session: aiohttp.ClientSession, form: dict[str, str]) -> str:
        async with session.post(url, data=form, auth=auth) as response:
            body = await response.json()
            if response.status != 201 or not body.get("sid"):
                raise RuntimeError(f"bare: HTTP {response.status}: {body}")
            return str(body["sid"])

    return await harness.post_all(in_flight, forms, post)


async def topslot_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Fire the bucket through the real scheduler and dispatch service; time it; count the states."""

    def settings(var_dir: Path, processes: int) -> Settings:
        return bench_settings(var_dir, spec["port"], spec["rate"], spec["in_flight"], processes, spec["url"])

    return await harness.topslot_run(spec, bench_campaign(), "sms", settings, deliveries.c.segments)


# ---------------------------------------------------------------- checks


def check_fake(label: str, seen: dict[str, Any], n: int, sid_digest: str) -> None:
    """The fake created exactly one message per recipient, each requested once and answered 201,
    and the sender holds exactly the fake's SIDs."""
    problems = []
    if seen["requests"] != n or seen["messages"] != n or seen["distinct_to"] != n:
        problems.append(
            f"{seen['requests']:,} requests, {seen['messages']:,} messages, {seen['distinct_to']:,} numbers"
        )
    if seen["requested_twice"]:
        problems.append(f"{seen['requested_twice']:,} numbers requested more than once")
    if seen["answered"] != {"201": n}:
        problems.append(f"answers {seen['answered']}")
    if seen["to_digest"] != numbers_digest(n):
        problems.append("not the seeded numbers")
    if seen["sid_digest"] != sid_digest:
        problems.append("the sender's SIDs are not the fake's")
    if problems:
        sys.exit(f"{label}: expected {n:,} messages, one per recipient: " + "; ".join(problems))


def detail(seen: dict[str, Any]) -> str:
    return f"form fields {', '.join(seen['fields'])}; body ~{seen['body_chars']:.0f} chars, segments {seen['segments']}"


# ---------------------------------------------------------------- main

BENCH = harness.Bench(
    doc=__doc__ or "",
    script=__file__,
    title="SMS pipeline",
    fake_name="fake Twilio",
    peer="Twilio",
    in_flight=IN_FLIGHT,
    in_flight_setting="twilio.max_in_flight",
    tmp_prefix="topslot-sms-bench-",
    ids="SIDs",
    seed=seed,
    serve_fake=serve_fake,
    runs={"bare": bare_run, "topslot": topslot_run},
    provider="twilio",
    check_fake=check_fake,
    detail=detail,
)

if __name__ == "__main__":
    harness.main(BENCH)
