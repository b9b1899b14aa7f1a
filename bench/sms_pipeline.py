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
run (SQLite), or re-seeded in a throwaway schema (PostgreSQL). Everything stays on 127.0.0.1; the
fake is stopped at the end.

    .venv/bin/python bench/sms_pipeline.py                          # 20,000 messages; 600 at 50/s (12 s)
    .venv/bin/python bench/sms_pipeline.py --messages 3000 --repeat 1
    .venv/bin/python bench/sms_pipeline.py --rate 100 --rate-seconds 15
    .venv/bin/python bench/sms_pipeline.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import math
import os
import random
import resource
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from seeding import seed_bucket  # noqa: E402

from daemon.campaign import Campaign  # noqa: E402
from daemon.clock import FakeClock  # noqa: E402
from daemon.dispatch.service import DispatchService  # noqa: E402
from daemon.logs import configure_logging  # noqa: E402
from daemon.scheduling.scheduler import BucketScheduler  # noqa: E402
from daemon.settings import Settings  # noqa: E402
from daemon.store import ledger  # noqa: E402
from daemon.store.db import open_engine  # noqa: E402
from daemon.store.schema import deliveries  # noqa: E402
from daemon.yaml_source import load_yaml  # noqa: E402

EXAMPLE = REPO / "config/campaigns/mothers-day-2027.yaml"
DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
SEEDED_AT = datetime(2027, 5, 1, tzinfo=UTC)
NAMES = ["Lena", "Noah", "Mei", "Zoë", "Ana", "Chloé", "Priya", "Hana", "Olivia", "Sofia"]
TRACKING = "https://t.shop.example.com"
UNLIMITED = 1_000_000.0  # messages/s: a rate that never binds
IN_FLIGHT = 20  # TwilioSettings.max_in_flight's default
TARGET_RATIO, TARGET_DEVIATION = 0.5, 0.05

# The fake's identity (tests/channels/fake_twilio.py's defaults; no real account, no real token).
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"
FROM_NUMBER = "+15017122661"


def phone(i: int) -> str:
    return f"+1415{i:07d}"  # E.164, distinct for i < 10,000,000


def numbers_digest(n: int) -> str:
    """What the fake's digest of the ``To`` it created messages for must be."""
    return digest(phone(i) for i in range(n))


def digest(values: Any) -> str:
    return hashlib.sha256("\n".join(sorted(values)).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the campaign and its ledger


def bench_campaign() -> Campaign:
    """The example campaign (its SMS template, coupon and landing page), SMS only, everyone in one
    07:30 UTC bucket."""
    data = dict(load_yaml(EXAMPLE).data)
    data.update(
        id="bench-sms",
        channels=["sms"],
        audience={"all": [{"consent": "sms"}]},
        schedule={
            "start": DUE.date(), "end": DUE.date(), "slots": ["07:30"], "timezone": "UTC", "days": "every_day",
            "missed_slot": {"grace": "12h", "then": "skip"},
        },
        content={"sms": data["content"]["sms"]},
    )  # fmt: skip
    data.pop("costs", None)
    return Campaign.model_validate(data)


def bench_settings(
    var_dir: Path, port: int, rate: float, in_flight: int, processes: int = 1, url: str | None = None
) -> Settings:
    extra: dict[str, Any] = {"database_url": url} if url else {}
    return Settings(
        **extra,
        dispatch_processes=processes,
        config_dir=REPO / "config",
        templates_dir=REPO / "templates",
        var_dir=var_dir,
        default_timezone="UTC",
        default_country="US",
        tracking_base_url=TRACKING,
        compliance={
            "postal_address": "Example Shop, 1 Example Road, Shanghai 200000",
            "sender_identity": "Example Shop",
        },
        twilio={
            "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER,
            "base_url": f"http://127.0.0.1:{port}", "rate_per_second": rate, "max_in_flight": in_flight,
            "timeout_seconds": 15, "status_callbacks": True,
        },
    )  # fmt: skip


def person(i: int) -> dict[str, Any]:
    return {
        "id": i + 1,
        "external_id": f"s{i}",
        "email": None,
        "phone": phone(i),
        "first_name": NAMES[i % len(NAMES)],
        "last_name": "Example",
        "gender": "female",
        "country": "US",
        "timezone": "UTC",
        "created_at": SEEDED_AT,
        "updated_at": SEEDED_AT,
    }


async def seed(url: str, schema: str | None, n: int) -> None:
    """Contacts with a phone and SMS consent, and one planned SMS row each, all due at ``DUE``."""
    await seed_bucket(url, schema, bench_campaign(), "sms", person, n, due=DUE, at=SEEDED_AT)


class Ledger:
    """Seeds once, hands out a fresh copy per run: a file copy on SQLite, a new schema on PostgreSQL."""

    def __init__(self, pg: str | None, n: int, workdir: Path):
        self.pg, self.n, self.workdir = pg, n, workdir
        self.master = workdir / f"seed-{n}.db"
        if pg is None and not self.master.exists():
            asyncio.run(seed(f"sqlite+aiosqlite:///{self.master}", None, n))

    def fresh(self) -> tuple[str, str | None]:
        if self.pg is None:
            copy = self.workdir / f"run-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.master, copy)
            return f"sqlite+aiosqlite:///{copy}", None
        schema = asyncio.run(pg_schema(self.pg))
        asyncio.run(seed(self.pg, schema, self.n))
        return self.pg, schema

    def done(self, url: str, schema: str | None) -> None:
        if schema is None:
            for suffix in ("", "-wal", "-shm"):
                Path(url.removeprefix("sqlite+aiosqlite:///") + suffix).unlink(missing_ok=True)
        else:
            asyncio.run(pg_schema(url, drop=schema))


async def pg_schema(url: str, drop: str | None = None) -> str:
    admin = open_engine(url)
    name = drop or f"bench_{uuid.uuid4().hex[:10]}"
    async with admin.begin() as conn:
        if drop:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))  # a generated name
        else:
            await conn.execute(text(f'CREATE SCHEMA "{name}"'))
    await admin.dispose()
    return name


# ---------------------------------------------------------------- the fake Twilio (its own process)


def serve_fake() -> None:
    """Run the fake Twilio on 127.0.0.1 plus a control endpoint (GET /stats, POST /reset) until
    stdin closes; print one JSON line with both ports when ready."""
    sys.path.insert(0, str(REPO / "tests"))
    from aiohttp import web
    from channels.fake_twilio import FakeTwilio

    class TimedFake(FakeTwilio):
        """Records when each create request arrived (the rate Twilio would see)."""

        def __post_init__(self) -> None:
            super().__post_init__()
            self.arrivals: list[float] = []

        async def _create(self, request: web.Request) -> web.StreamResponse:
            self.arrivals.append(time.monotonic())
            return await super()._create(request)

        def reset(self) -> None:
            self.requests.clear()
            self.messages.clear()
            self._seen.clear()
            self.arrivals.clear()
            self.peak_in_flight = 0

        def stats(self) -> dict[str, Any]:
            created = Counter(m.to for m in self.messages.values())
            requested = Counter(r.to for r in self.requests)
            arrivals = self.arrivals
            window = max(  # the most requests that arrived within any one second
                (bisect.bisect_right(arrivals, t + 1.0) - k for k, t in enumerate(arrivals)), default=0
            )
            usage = resource.getrusage(resource.RUSAGE_SELF)
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
                "first": arrivals[0] if arrivals else None,
                "last": arrivals[-1] if arrivals else None,
                "max_1s": window,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }

    async def main() -> None:
        async with TimedFake() as fake:
            assert (fake.account_sid, fake.auth_token, fake.phone_number) == (ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER)

            async def stats(request: web.Request) -> web.Response:
                return web.json_response(fake.stats())

            async def reset(request: web.Request) -> web.Response:
                fake.reset()
                return web.json_response(fake.stats())

            control = web.Application()
            control.router.add_get("/stats", stats)
            control.router.add_post("/reset", reset)
            runner = web.AppRunner(control, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            print(json.dumps({"port": fake.port, "control": runner.addresses[0][1]}), flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
            await runner.cleanup()

    asyncio.run(main())


class Fake:
    """The parent's handle on the fake Twilio process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-fake"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            sys.exit("the fake Twilio did not start")
        ports = json.loads(line)
        self.port, self.control = ports["port"], ports["control"]

    def _call(self, path: str, method: str = "GET") -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.control}{path}", method=method)
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with direct.open(request, timeout=60) as response:
            return json.loads(response.read())

    def reset(self) -> dict[str, Any]:
        return self._call("/reset", "POST")

    def stats(self) -> dict[str, Any]:
        return self._call("/stats")

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)


# ---------------------------------------------------------------- the measured senders (child processes)


def sample_bodies(count: int = 50) -> list[str]:
    """SMS bodies as topslot renders them for this campaign (real coupon shape, short tracked link,
    opt-out line), for the bare client to send."""
    from daemon.dispatch.dispatcher import CampaignKit
    from daemon.links.keys import Keyring
    from daemon.store.dispatch import Recipient
    from daemon.templating import contact_view

    with tempfile.TemporaryDirectory() as var_dir:
        kit = CampaignKit(bench_campaign(), bench_settings(Path(var_dir), 1, 1.0, 1), Keyring({"k1": b"x" * 32}))
    rng = random.Random(10)
    bodies = []
    for i in range(count):
        p = person(i)
        r = Recipient(
            delivery_id=i + 1, lease_epoch=1, campaign_id="bench-sms", channel="sms", slot="07:30",
            slot_date=DUE.date(), due_utc=DUE, timezone="UTC", attempts=0, coupon_code=None, contact_id=i + 1,
            external_id=p["external_id"], email=None, phone=p["phone"], first_name=p["first_name"],
            last_name=p["last_name"], gender="female", birth_date=None, age=None, country="US", locale=None,
            im_ids=None, attributes=None,
        )  # fmt: skip
        coupon = "MOM" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=10))
        links = kit.links.for_delivery(i + 1, "sms")
        bodies.append(kit.compiled.render_text("sms", contact_view(r, DUE.date()), coupon, links, "07:30"))
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
    queue = iter(forms)
    sids: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for form in queue:
            async with session.post(url, data=form, auth=auth) as response:
                body = await response.json()
                if response.status != 201 or not body.get("sid"):
                    raise RuntimeError(f"bare: HTTP {response.status}: {body}")
                sids.append(body["sid"])

    cpu_before, started = _cpu_seconds(), time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        await asyncio.gather(*(worker(session) for _ in range(in_flight)))
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
    return {"sent": len(sids), "seconds": elapsed, "cpu_seconds": cpu, "sid_digest": digest(sids)}


async def topslot_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Fire the bucket through the real scheduler and dispatch service; time it; count the states."""
    url, schema = spec["url"], spec["schema"] or None
    engine = open_engine(url, schema=schema)
    campaign = bench_campaign()
    with tempfile.TemporaryDirectory() as var_dir:
        processes = 1 if schema else spec["processes"]  # helpers open settings.database_url, not a schema
        settings = bench_settings(Path(var_dir), spec["port"], spec["rate"], spec["in_flight"], processes, url)
        clock = FakeClock(DUE - timedelta(minutes=5))
        service = DispatchService(engine, settings, clock, node="bench")
        if service.helpers is not None:
            await service.helpers.start()
        scheduler = BucketScheduler(
            engine, settings, clock, owner=service.owner, on_claimed=service.dispatch, on_fire=service.fire_helpers
        )
        await service.on_campaigns_changed({campaign.id: campaign})
        scheduler.campaigns = {campaign.id: campaign}  # planned already (seeded): no re-plan
        cpu_before, started = _cpu_seconds(), time.perf_counter()
        claimed = await scheduler.fire_bucket(campaign.id, "sms", DUE)
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
        await service.close()
    states = await ledger.state_counts(engine, campaign.id)
    query = select(deliveries.c.provider, deliveries.c.provider_id, deliveries.c.segments).where(
        deliveries.c.campaign_id == campaign.id, deliveries.c.state == "sent"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    await engine.dispose()
    return {
        "claimed": claimed,
        "sent": states.get(("sent", None), 0),
        "states": {f"{s}/{r}" if r else s: n for (s, r), n in states.items()},
        "providers": dict(Counter(r.provider for r in rows)),
        "segments": {str(k): v for k, v in Counter(r.segments for r in rows).items()},
        "sid_digest": digest(r.provider_id or "" for r in rows),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_main(kind: str, spec: dict[str, Any]) -> None:
    configure_logging("warning", "console", stream=sys.stderr)
    make: Callable[[], Coroutine[Any, Any, dict[str, Any]]] = (
        (lambda: bare_run(spec)) if kind == "bare" else (lambda: topslot_run(spec))
    )
    if spec.get("uvloop"):
        import uvloop

        print(json.dumps(uvloop.run(make())))
        return
    print(json.dumps(asyncio.run(make())))


def run_child(kind: str, spec: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    command = [sys.executable]
    if profile:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--gil", "-o", profile, "-f", "raw", "-r", "200", "--", sys.executable]
    command += [__file__, "--child", kind, "--spec", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} child failed:\n{done.stderr[-4000:]}")
    return json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))


# ---------------------------------------------------------------- checks


def figures(n: int, r: dict[str, Any], fake_cpu: float, note: str = "") -> str:
    """A run's rate, time, the sender's CPU per message and share of a core, and the fake's CPU."""
    per_msg, busy = r["cpu_seconds"] / n * 1e6, r["cpu_seconds"] / r["seconds"]
    return (
        f"{n / r['seconds']:>7,.0f} msg/s, {r['seconds']:.1f} s, "
        f"CPU {per_msg:,.0f} µs/msg ({busy:.0%} of a core{note}); fake {fake_cpu / n * 1e6:,.0f} µs/msg"
    )


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


def check_ledger(label: str, r: dict[str, Any], n: int) -> None:
    if r["claimed"] != n or r["sent"] != n or r["providers"] != {"twilio": n}:
        sys.exit(f"{label}: sent {r['sent']:,} of {n:,} (claimed {r['claimed']:,}): {r['states']} {r['providers']}")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="bare and rate-off runs (default 20,000)")
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs each (default 3)")
    parser.add_argument("--rate", type=float, default=50.0, help="the limited run's rate, msg/s (default 50)")
    parser.add_argument(
        "--rate-seconds", type=float, default=12.0, help="the limited run lasts about this long (default 12 s)"
    )
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT, help="twilio.max_in_flight (default 20)")
    parser.add_argument("--processes", type=int, default=1, help="dispatch_processes for topslot (default 1)")
    parser.add_argument("--pg", help="use this PostgreSQL URL (throwaway schemas) instead of SQLite")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own loop even if uvloop is installed")
    parser.add_argument("--skip-rate", action="store_true", help="skip the rate-limited run")
    parser.add_argument("--profile", help="record the first topslot rate-off run with py-spy into this file")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.messages, args.repeat, args.in_flight, args.processes) < 1 or args.rate <= 0:
        parser.error("--messages, --repeat, --in-flight and --processes must be ≥ 1, --rate > 0")
    if args.serve_fake:
        serve_fake()
        return
    if args.child:
        child_main(args.child, json.loads(args.spec))
        return
    configure_logging("warning", "console", stream=sys.stderr)
    n, rate = args.messages, args.rate
    rate_n = max(1, math.ceil(rate * args.rate_seconds))
    try:
        import uvloop  # noqa: F401

        use_uvloop = not args.no_uvloop
    except ImportError:
        use_uvloop = False
    loop_name = "uvloop" if use_uvloop else "asyncio"
    db = "PostgreSQL" if args.pg else "SQLite"

    fake = Fake()
    try:
        print(
            f"SMS pipeline: {n:,} messages, {db}, fake Twilio (own process) on 127.0.0.1:{fake.port}, "
            f"{args.in_flight} in flight, {loop_name}, median of {args.repeat} runs, {os.cpu_count()} cores",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="topslot-sms-bench-") as tmp:
            workdir = Path(tmp)
            started = time.perf_counter()
            store = Ledger(args.pg, n, workdir)
            rate_store = None if args.skip_rate else Ledger(args.pg, rate_n, workdir)
            if not args.pg:
                print(f"  seeded {n:,} + {rate_n:,} recipients in {time.perf_counter() - started:.1f} s", flush=True)
            base = {"port": fake.port, "in_flight": args.in_flight, "processes": args.processes, "uvloop": use_uvloop}

            def fired(
                ledger_: Ledger, count: int, r_per_s: float, label: str, profile: str | None = None
            ) -> tuple[dict[str, Any], dict[str, Any]]:
                url, schema = ledger_.fresh()
                try:
                    before = fake.reset()
                    r = run_child("topslot", {**base, "url": url, "schema": schema or "", "rate": r_per_s}, profile)
                    seen = fake.stats()
                finally:
                    ledger_.done(url, schema)
                check_ledger(label, r, count)
                check_fake(label, seen, count, r["sid_digest"])
                seen["cpu_seconds"] -= before["cpu_seconds"]
                return r, seen

            main_only = ", main process only" if args.processes > 1 else ""
            bare_values: list[float] = []
            topslot_values: list[float] = []
            cpu: dict[str, list[float]] = {"bare": [], "topslot": []}  # µs per message
            for k in range(args.repeat):
                before = fake.reset()
                b = run_child("bare", {**base, "n": n})
                seen = fake.stats()
                check_fake("bare", seen, n, b["sid_digest"])
                bare_values.append(n / b["seconds"])
                cpu["bare"].append(b["cpu_seconds"] / n * 1e6)
                bare_cpu = seen["cpu_seconds"] - before["cpu_seconds"]
                print(f"  run {k + 1}: bare aiohttp  {figures(n, b, bare_cpu)}", flush=True)
                if k == 0:
                    print(
                        f"         form fields {', '.join(seen['fields'])}; body ~{seen['body_chars']:.0f} chars, "
                        f"segments {seen['segments']}",
                        flush=True,
                    )
                r, seen = fired(store, n, UNLIMITED, "topslot", args.profile if k == 0 else None)
                topslot_values.append(n / r["seconds"])
                cpu["topslot"].append(r["cpu_seconds"] / n * 1e6)
                pair = b["seconds"] / r["seconds"]
                print(
                    f"  run {k + 1}: topslot       {figures(n, r, seen['cpu_seconds'], main_only)}; "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB; {pair:.2f}× this bare run",
                    flush=True,
                )
                if k == 0:
                    print(
                        f"         form fields {', '.join(seen['fields'])}; body ~{seen['body_chars']:.0f} chars, "
                        f"segments {seen['segments']}; all {n:,} rows sent, one message each, SIDs match",
                        flush=True,
                    )

            limited: list[tuple[float, float, int]] = []
            if rate_store is not None:
                for k in range(args.repeat):
                    r, seen = fired(rate_store, rate_n, rate, f"topslot at {rate:g}/s")
                    observed = (rate_n - 1) / (seen["last"] - seen["first"]) if rate_n > 1 else float("nan")
                    limited.append((observed, rate_n / r["seconds"], seen["max_1s"]))
                    print(
                        f"  run {k + 1}: topslot at {rate:g}/s: {rate_n:,} msgs in {r['seconds']:.1f} s; "
                        f"the fake saw {observed:,.2f} msg/s ({observed / rate - 1:+.2%}), "
                        f"end to end {rate_n / r['seconds']:,.2f} msg/s, most in any 1 s: {seen['max_1s']}",
                        flush=True,
                    )
    finally:
        fake.stop()

    bare, topslot = statistics.median(bare_values), statistics.median(topslot_values)
    ratio = topslot / bare
    verdicts = [ratio >= TARGET_RATIO]
    bare_label, topslot_label = f"bare aiohttp, {args.in_flight} in flight", f"topslot, rate limit off ({db})"
    print("\nsummary (medians)")
    print(f"  {bare_label:<36} {bare:>8,.0f} msg/s   runs: {', '.join(f'{v:,.0f}' for v in bare_values)}")
    print(
        f"  {topslot_label:<36} {topslot:>8,.0f} msg/s   runs: {', '.join(f'{v:,.0f}' for v in topslot_values)}"
        f"   {ratio:.2f}× bare"
    )
    print(f"  target: topslot ≥ {TARGET_RATIO:g}× bare: {ratio:.2f}× → {'PASS' if verdicts[-1] else 'FAIL'}")
    bare_cpu, topslot_cpu = statistics.median(cpu["bare"]), statistics.median(cpu["topslot"])
    print(
        f"  sender CPU per message: bare {bare_cpu:,.0f} µs, topslot {topslot_cpu:,.0f} µs{main_only} "
        f"({bare_cpu / topslot_cpu:.2f}×: the ratio when both senders are CPU-bound, e.g. on an idle machine)"
    )
    if limited:
        observed = statistics.median(v[0] for v in limited)
        end_to_end = statistics.median(v[1] for v in limited)
        deviation = observed / rate - 1
        verdicts.append(abs(deviation) <= TARGET_DEVIATION)
        label = f"topslot at {rate:g}/s ({rate_n:,} msgs)"
        print(
            f"  {label:<36} {observed:>8,.2f} msg/s   runs: {', '.join(f'{v[0]:,.2f}' for v in limited)}"
            f"   (end to end {end_to_end:,.2f} msg/s, {end_to_end / rate - 1:+.2%})"
        )
        print(
            f"  target: the rate Twilio sees within {TARGET_DEVIATION:.0%} of {rate:g}/s: {deviation:+.2%} → "
            f"{'PASS' if verdicts[-1] else 'FAIL'}"
        )
    print(f"  overall: {'PASS' if all(verdicts) else 'FAIL'}")


if __name__ == "__main__":
    main()
