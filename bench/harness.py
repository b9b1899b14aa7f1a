"""What the send benchmarks that race topslot against a bare aiohttp client in one run share
(``sms_pipeline.py``, ``im_pipeline.py``).

A benchmark describes itself in a ``Bench`` (its fake provider, its two senders, its checks and
labels) and calls ``main(bench)``, which gives it the same flags, runs and printout:

- the fake provider in its own process (``--serve-fake``: the benchmark's ``serve_fake`` starts the
  fake, a ``TimedFake``, and ``serve`` runs it with ``serve_control``, a control endpoint with
  ``GET /stats`` and ``POST /reset``, until the parent closes its stdin; ``FakeProcess`` is the
  parent's handle);
- every measured sender in a fresh child process (``--child bare|topslot --spec JSON``;
  ``run_child``), the first topslot rate-off run under ``py-spy record --gil`` with ``--profile``;
- the ledger seeded once and copied per run (SQLite) or re-seeded in a throwaway database (``--pg``);
- bare and topslot (rate limit off) alternating ``--repeat`` times, then topslot at ``--rate`` R/s
  ``--repeat`` times; each run checked (the benchmark's ``check_fake``, and ``check_ledger``: every
  row claimed and sent through the benchmark's provider);
- medians, the ratio to bare, CPU per message, and PASS/FAIL against ``TARGET_RATIO`` and
  ``TARGET_DEVIATION``.

A child's result is a JSON object with at least ``seconds``, ``cpu_seconds`` and ``id_digest`` (the
provider ids it holds); a topslot child's (``topslot_run``: the seeded bucket fired by ``fire_bucket``,
which send_pipeline.py uses too) also ``claimed``, ``sent``, ``providers`` and ``peak_rss_mb``. The fake's
stats have at least ``first``/``last`` (monotonic arrival of the first and last request), ``max_1s``
and ``cpu_seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from seeding import DUE
from sqlalchemy import Column, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.clock import FakeClock
from topslot.dispatch.service import DispatchService
from topslot.heap import settle_heap
from topslot.logs import configure_logging
from topslot.scheduling.scheduler import BucketScheduler
from topslot.settings import Settings
from topslot.store import ledger
from topslot.store.db import open_engine
from topslot.store.schema import deliveries

UNLIMITED = 1_000_000.0  # messages/s: a rate that never binds
TARGET_RATIO, TARGET_DEVIATION = 0.5, 0.05

Result = dict[str, Any]
T = TypeVar("T")
Run = Callable[[dict[str, Any]], Coroutine[Any, Any, Result]]


def digest(values: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(values)).encode()).hexdigest()[:16]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def processes_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of other (running) processes, read from /proc (0 where unreadable)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def most_in_one_second(arrivals: list[float]) -> int:
    """The most requests that arrived within any one second (``arrivals`` sorted)."""
    return max((bisect.bisect_right(arrivals, t + 1.0) - k for k, t in enumerate(arrivals)), default=0)


# ---------------------------------------------------------------- the ledger


class Ledger:
    """Seeds once, hands out a fresh copy per run (its URL): a file copy on SQLite, a new database on
    PostgreSQL (a whole database, not a schema: the dispatch helpers open ``settings.database_url``,
    which names no schema, so a run on PostgreSQL can use as many processes as one on SQLite).
    ``seed(url, n)`` seeds one."""

    def __init__(
        self, pg: str | None, n: int, workdir: Path, seed: Callable[[str, int], Coroutine[Any, Any, None]]
    ):
        self.pg, self.n, self.workdir, self.seed = pg, n, workdir, seed
        self.master = workdir / f"seed-{n}.db"
        if pg is None and not self.master.exists():
            asyncio.run(seed(f"sqlite+aiosqlite:///{self.master}", n))

    def fresh(self) -> str:
        if self.pg is None:
            copy = self.workdir / f"run-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.master, copy)
            return f"sqlite+aiosqlite:///{copy}"
        url = asyncio.run(pg_database(self.pg))
        asyncio.run(self.seed(url, self.n))
        return url

    def done(self, url: str) -> None:
        if self.pg is None:
            for suffix in ("", "-wal", "-shm"):
                Path(url.removeprefix("sqlite+aiosqlite:///") + suffix).unlink(missing_ok=True)
        else:
            asyncio.run(pg_database(self.pg, drop=url))


async def pg_database(url: str, drop: str | None = None) -> str:
    """The URL of a new, empty database on the server of ``url`` (``bench_<random>``); or the database
    of the URL ``drop`` dropped (its sessions ended first)."""
    admin = open_engine(url)
    name = make_url(drop).database if drop else f"bench_{uuid.uuid4().hex[:10]}"
    assert name and name.startswith("bench_"), name  # a generated name: nothing else is ever dropped
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            if drop:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


# ---------------------------------------------------------------- the fake (its own process)


class TimedFake:
    """Mixed into a fake provider of tests/channels (``class TimedTwilio(TimedFake, FakeTwilio)``) run in
    the fake's process: records when each request arrived (the rate the provider sees), forgets what it
    received on ``reset()``, and gives the stats every fake reports (``arrival_stats()``)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]
        self.arrivals: list[float] = []

    def _handling(self) -> Any:
        self.arrivals.append(time.monotonic())
        return super()._handling()  # type: ignore[misc]

    def reset(self) -> None:
        self.requests.clear()  # type: ignore[attr-defined]
        self.messages.clear()  # type: ignore[attr-defined]
        self._seen.clear()  # type: ignore[attr-defined]
        self.arrivals.clear()
        self.peak_in_flight = 0

    def arrival_stats(self) -> dict[str, Any]:
        """``first`` and ``last`` arrival (monotonic), ``max_1s`` and this process's ``cpu_seconds``."""
        arrivals = self.arrivals
        return {
            "first": arrivals[0] if arrivals else None,
            "last": arrivals[-1] if arrivals else None,
            "max_1s": most_in_one_second(arrivals),
            "cpu_seconds": cpu_seconds(),
        }


async def serve_control(port: int, stats: Callable[[], dict[str, Any]], reset: Callable[[], None]) -> None:
    """In the fake's process, next to the fake listening on ``port``: serve ``GET /stats`` and
    ``POST /reset`` (then the stats) on 127.0.0.1, print one JSON line with both ports, and return
    when stdin closes (the parent is done)."""
    from aiohttp import web

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats())

    async def do_reset(request: web.Request) -> web.Response:
        reset()
        return web.json_response(stats())

    control = web.Application()
    control.router.add_get("/stats", get_stats)
    control.router.add_post("/reset", do_reset)
    runner = web.AppRunner(control, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(json.dumps({"port": port, "control": runner.addresses[0][1]}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await runner.cleanup()


def serve(fake: Any) -> None:
    """In the fake's process: run ``fake`` (a ``TimedFake`` with a ``stats()``) on 127.0.0.1, with
    ``serve_control`` next to it, until the parent closes our stdin."""

    async def main() -> None:
        async with fake:
            await serve_control(fake.port, fake.stats, fake.reset)

    asyncio.run(main())


class FakeProcess:
    """The parent's handle on the fake, run as ``script --serve-fake``."""

    def __init__(self, script: str, name: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, script, "--serve-fake"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"the {name} did not start")
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


def child_main(kind: str, spec: dict[str, Any], runs: Mapping[str, Run]) -> None:
    """In a child: run ``runs[kind](spec)`` (on uvloop when ``spec["uvloop"]``), print its JSON."""
    configure_logging("warning", "console", stream=sys.stderr)
    run = runs[kind]
    if spec.get("uvloop"):
        import uvloop

        print(json.dumps(uvloop.run(run(spec))))
        return
    print(json.dumps(asyncio.run(run(spec))))


async def post_all(
    in_flight: int, items: Iterable[T], post: Callable[[aiohttp.ClientSession, T], Awaitable[str]]
) -> Result:
    """The bare sender: ``in_flight`` workers on one aiohttp session (one connection each) ``post`` every
    item (``post`` returns the provider's id for it, or raises); timed: ``sent``, ``seconds``,
    ``cpu_seconds``, ``id_digest``."""
    queue = iter(items)
    ids: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for item in queue:
            ids.append(await post(session, item))

    cpu_before, started = cpu_seconds(), time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        await asyncio.gather(*(worker(session) for _ in range(in_flight)))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    return {"sent": len(ids), "seconds": elapsed, "cpu_seconds": cpu, "id_digest": digest(ids)}


async def fire_bucket(engine: AsyncEngine, settings: Settings, campaign: Campaign, channel: str) -> Result:
    """Fire the seeded bucket of ``channel`` at ``DUE`` through the real scheduler and dispatch service
    (on a clock 5 minutes before it); time it; count the states: ``claimed``, ``sent``, ``states``,
    ``seconds``, ``cpu_seconds``."""
    clock = FakeClock(DUE - timedelta(minutes=5))
    service = DispatchService(engine, settings, clock, node="bench")
    if service.helpers is not None:
        await service.helpers.start()
    scheduler = BucketScheduler(
        engine, settings, clock, owner=service.owner, on_claimed=service.dispatch, on_fire=service.fire_helpers,
        on_finished=service.finish_bucket,
    )
    await service.on_campaigns_changed({campaign.id: campaign})
    scheduler.campaigns = {campaign.id: campaign}  # planned already (seeded): no re-plan
    settle_heap()  # as the daemon does once it has started (topslot.heap)
    helpers = [p.pid for p in service.helpers._processes if p.pid] if service.helpers is not None else []
    cpu_before, started = cpu_seconds() + processes_cpu_seconds(helpers), time.perf_counter()
    claimed = await scheduler.fire_bucket(campaign.id, channel, DUE)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() + processes_cpu_seconds(helpers) - cpu_before  # the helpers' share too
    await service.close()
    states = await ledger.state_counts(engine, campaign.id)
    return {
        "claimed": claimed,
        "sent": states.get(("sent", None), 0),
        "states": {f"{s}/{r}" if r else s: n for (s, r), n in states.items()},
        "seconds": elapsed,
        "cpu_seconds": cpu,
    }


async def topslot_run(
    spec: dict[str, Any],
    campaign: Campaign,
    channel: str,
    settings: Callable[[Path, int], Settings],
    *counted: Column[Any],
) -> Result:
    """A topslot child: ``fire_bucket`` on the ledger of ``spec`` (``url``) with
    ``settings(var_dir, processes)``; then, of the sent rows, the ``providers``, the ``id_digest`` of
    their provider ids and the counts of each ``counted`` column's values (by its name); ``peak_rss_mb``."""
    engine = open_engine(spec["url"])
    with tempfile.TemporaryDirectory() as var_dir:
        fired = await fire_bucket(engine, settings(Path(var_dir), spec["processes"]), campaign, channel)
    query = select(deliveries.c.provider, deliveries.c.provider_id, *counted).where(
        deliveries.c.campaign_id == campaign.id, deliveries.c.state == "sent"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    await engine.dispose()
    by_value = {c.name: {str(k): v for k, v in Counter(getattr(r, c.name) for r in rows).items()} for c in counted}
    return {
        **fired,
        "providers": dict(Counter(r.provider for r in rows)),
        **by_value,
        "id_digest": digest(r.provider_id or "" for r in rows),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_child(script: str, kind: str, spec: dict[str, Any], profile: str | None = None) -> Result:
    """Run ``script --child kind`` in a fresh process (under py-spy into ``profile``) and return its JSON."""
    command = [sys.executable]
    if profile:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--gil", "-o", profile, "-f", "raw", "-r", "200", "--", sys.executable]
    command += [script, "--child", kind, "--spec", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} child failed:\n{done.stderr[-4000:]}")
    return json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))


# ---------------------------------------------------------------- one benchmark


@dataclass(frozen=True)
class Bench:
    """What differs between the benchmarks (``main`` does the rest)."""

    doc: str  # the module docstring: --help
    script: str  # the benchmark's file: children and the fake run it again
    title: str  # "SMS pipeline"
    fake_name: str  # "fake Twilio"
    peer: str  # who observes the rate: "Twilio"
    in_flight: int  # the messenger's max_in_flight default
    in_flight_setting: str  # "twilio.max_in_flight"
    tmp_prefix: str  # "topslot-sms-bench-"
    ids: str  # what the provider ids are called: "SIDs"
    seed: Callable[[str, int], Coroutine[Any, Any, None]]
    serve_fake: Callable[[], None]
    runs: Mapping[str, Run]  # "bare" and "topslot"
    provider: str  # the ledger's provider of every sent row: "twilio"
    check_fake: Callable[[str, dict[str, Any], int, str], None]  # (label, fake stats, n, sender's id digest)
    detail: Callable[[dict[str, Any]], str]  # a line on what the fake received (printed after run 1)


def check_ledger(label: str, r: Result, n: int, provider: str) -> None:
    """The topslot child claimed and sent all ``n`` rows, each through ``provider``."""
    if r["claimed"] != n or r["sent"] != n or r["providers"] != {provider: n}:
        sys.exit(f"{label}: sent {r['sent']:,} of {n:,} (claimed {r['claimed']:,}): {r['states']} {r['providers']}")


def parse(bench: Bench) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=bench.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="bare and rate-off runs (default 20,000)")
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs each (default 3)")
    parser.add_argument("--rate", type=float, default=50.0, help="the limited run's rate, msg/s (default 50)")
    parser.add_argument(
        "--rate-seconds", type=float, default=12.0, help="the limited run lasts about this long (default 12 s)"
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=bench.in_flight,
        help=f"{bench.in_flight_setting} (default {bench.in_flight})",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="dispatch_processes for topslot (default 1; its CPU counts the helpers')"
    )
    parser.add_argument("--pg", help="use this PostgreSQL URL (a throwaway database per run) instead of SQLite")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own loop even if uvloop is installed")
    parser.add_argument("--skip-rate", action="store_true", help="skip the rate-limited run")
    parser.add_argument("--profile", help="record the first topslot rate-off run with py-spy into this file")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.messages, args.repeat, args.in_flight, args.processes) < 1 or args.rate <= 0:
        parser.error("--messages, --repeat, --in-flight and --processes must be ≥ 1, --rate > 0")
    return args


def figures(n: int, r: Result, fake_cpu: float, note: str = "") -> str:
    """A run's rate, time, the sender's CPU per message and share of a core, and the fake's CPU."""
    per_msg, busy = r["cpu_seconds"] / n * 1e6, r["cpu_seconds"] / r["seconds"]
    return (
        f"{n / r['seconds']:>7,.0f} msg/s, {r['seconds']:.1f} s, "
        f"CPU {per_msg:,.0f} µs/msg ({busy:.0%} of a core{note}); fake {fake_cpu / n * 1e6:,.0f} µs/msg"
    )


def main(bench: Bench) -> None:
    args = parse(bench)
    if args.serve_fake:
        bench.serve_fake()
        return
    if args.child:
        child_main(args.child, json.loads(args.spec), bench.runs)
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

    fake = FakeProcess(bench.script, bench.fake_name)
    try:
        print(
            f"{bench.title}: {n:,} messages, {db}, {bench.fake_name} (own process) on 127.0.0.1:{fake.port}, "
            f"{args.in_flight} in flight, {loop_name}, median of {args.repeat} runs, {os.cpu_count()} cores",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix=bench.tmp_prefix) as tmp:
            workdir = Path(tmp)
            started = time.perf_counter()
            store = Ledger(args.pg, n, workdir, bench.seed)
            rate_store = None if args.skip_rate else Ledger(args.pg, rate_n, workdir, bench.seed)
            if not args.pg:
                print(f"  seeded {n:,} + {rate_n:,} recipients in {time.perf_counter() - started:.1f} s", flush=True)
            base = {"port": fake.port, "in_flight": args.in_flight, "processes": args.processes, "uvloop": use_uvloop}

            def fired(
                ledger_: Ledger, count: int, r_per_s: float, label: str, profile: str | None = None
            ) -> tuple[Result, dict[str, Any]]:
                url = ledger_.fresh()
                try:
                    before = fake.reset()
                    spec = {**base, "url": url, "rate": r_per_s}
                    r = run_child(bench.script, "topslot", spec, profile)
                    seen = fake.stats()
                finally:
                    ledger_.done(url)
                check_ledger(label, r, count, bench.provider)
                bench.check_fake(label, seen, count, r["id_digest"])
                seen["cpu_seconds"] -= before["cpu_seconds"]
                return r, seen

            main_only = f", {args.processes} processes" if args.processes > 1 else ""
            bare_values: list[float] = []
            topslot_values: list[float] = []
            cpu: dict[str, list[float]] = {"bare": [], "topslot": []}  # µs per message
            for k in range(args.repeat):
                before = fake.reset()
                b = run_child(bench.script, "bare", {**base, "n": n})
                seen = fake.stats()
                bench.check_fake("bare", seen, n, b["id_digest"])
                bare_values.append(n / b["seconds"])
                cpu["bare"].append(b["cpu_seconds"] / n * 1e6)
                bare_cpu = seen["cpu_seconds"] - before["cpu_seconds"]
                print(f"  run {k + 1}: bare aiohttp  {figures(n, b, bare_cpu)}", flush=True)
                if k == 0:
                    print(f"         {bench.detail(seen)}", flush=True)
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
                        f"         {bench.detail(seen)}; all {n:,} rows sent, one message each, {bench.ids} match",
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
            f"  target: the rate {bench.peer} sees within {TARGET_DEVIATION:.0%} of {rate:g}/s: {deviation:+.2%} → "
            f"{'PASS' if verdicts[-1] else 'FAIL'}"
        )
    print(f"  overall: {'PASS' if all(verdicts) else 'FAIL'}")
