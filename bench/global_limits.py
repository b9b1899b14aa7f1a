"""Benchmark: what holding the rate and per-domain limits for every node costs one node, in one run.

One node (one dispatch process) sends the example campaign's email bucket end to end (the real
scheduler and dispatch service, as ``send_pipeline.py``, on a PostgreSQL ledger) to Postfix's
``smtp-sink``, with its limits held three ways, runs alternating:

- ``in-process``: ``LocalLimits`` (what SQLite keeps; no round trip);
- ``postgresql``: ``SharedLimits`` over ``PostgresLimitStore`` (the ledger's database);
- ``redis``: ``SharedLimits`` over ``RedisLimitStore`` (``--redis``).

Printed per variant: msg/s (median of ``--runs``), the limit store's round trips per message (token
batches, domain slot grabs, frees and renewals: the extra cost of shared limits) beside the
ledger's own statements per message, and each shared variant's throughput as a ratio of the
in-process one. ``--rate`` sets the server's ``rate_per_second`` (default: one that never binds, so
the figures are the mechanism's cost at full speed); ``--domains`` how many receiving domains the
recipients spread over (1,000 as in ``send_pipeline.py``; a few large mailbox providers: 10).

    .venv/bin/python bench/global_limits.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/global_limits.py --pg ... --redis redis://127.0.0.1:6379/0 --recipients 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import seeding  # noqa: E402
from harness import fire_bucket  # noqa: E402
from smtp_transport import ensure_postfix_tools, free_port, start_sink  # noqa: E402

from topslot.campaign import Campaign  # noqa: E402
from topslot.channels import limits as limits_module  # noqa: E402
from topslot.dispatch import service as service_module  # noqa: E402
from topslot.logs import configure_logging  # noqa: E402
from topslot.settings import Settings  # noqa: E402
from topslot.store.db import open_engine  # noqa: E402
from topslot.store.schema import deliveries  # noqa: E402

CAMPAIGN_ID = "bench-limits"
POOL_SIZE = 20
MAX_PER_DOMAIN = 20
VARIANTS = ("in-process", "postgresql", "redis")


def bench_campaign() -> Campaign:
    return seeding.bench_campaign(CAMPAIGN_ID, "email")


def settings_for(var_dir: Path, port: int, rate: float, redis: str | None) -> Settings:
    return seeding.bench_settings(
        var_dir,
        smtp={
            "sink": {
                "host": "127.0.0.1", "port": port, "tls": "none", "pool_size": POOL_SIZE,
                "rate_per_second": rate, "max_per_domain": MAX_PER_DOMAIN,
            }
        },
        **({"redis_url": redis, "redis_key_prefix": f"bench-{uuid.uuid4().hex[:8]}"} if redis else {}),
    )  # fmt: skip


def seeder(domains: int) -> Any:
    async def seed(url: str, n: int) -> None:
        def person(i: int) -> dict[str, Any]:
            return seeding.person(i, f"b{i}", email=f"user{i}@d{i % domains}.example")

        await seeding.seed_bucket(url, bench_campaign(), "email", person, n)

    return seed


# ---------------------------------------------------------------- one run (child process)


async def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Fire the bucket with the variant's limits; count the limit store's round trips and the
    ledger's statements."""
    engine = open_engine(spec["url"])
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    made: list[limits_module.Limits] = []
    choose = limits_module.limits_for

    def limits_for(settings: Settings, engine: Any, holder: str, share: float = 1.0) -> limits_module.Limits:
        limits = (
            limits_module.LocalLimits(share)
            if spec["variant"] == "in-process"
            else choose(settings, engine, holder, share)
        )
        made.append(limits)
        return limits

    service_module.limits_for = limits_for  # type: ignore[assignment]
    redis = spec["redis"] if spec["variant"] == "redis" else None
    with tempfile.TemporaryDirectory() as var_dir:
        settings = settings_for(Path(var_dir), spec["port"], spec["rate"], redis)
        fired = await fire_bucket(engine, settings, bench_campaign(), "email")
    (limits,) = made
    trips = limits.store.round_trips if isinstance(limits, limits_module.SharedLimits) else 0
    in_ledger = statements - (trips if spec["variant"] == "postgresql" else 0)
    errors: list[str] = []
    if fired["sent"] != fired["claimed"]:  # say why, in the parent's exit message
        async with engine.connect() as conn:
            errors = list((await conn.execute(select(deliveries.c.last_error).distinct().limit(5))).scalars())
    await engine.dispose()
    return {**fired, "limit_round_trips": trips, "ledger_statements": in_ledger, "errors": errors}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"topslot child failed:\n{done.stderr[-4000:]}")
    return json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pg", required=False, help="PostgreSQL URL (a throwaway database per run); required unless --child"
    )
    parser.add_argument("--redis", help="Redis URL for the redis variant (skipped without it)")
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3, help="median of this many runs per variant")
    parser.add_argument("--rate", type=float, default=1_000_000.0, help="the server's rate_per_second")
    parser.add_argument("--domains", type=int, default=1000, help="receiving domains the recipients spread over")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        configure_logging("warning", "console", stream=sys.stderr)
        print(json.dumps(asyncio.run(child_run(json.loads(args.child)))))
        return
    if not args.pg:
        parser.error("--pg is required (the shared limits need PostgreSQL; the ledger is on it for every variant)")
    configure_logging("warning", "console", stream=sys.stderr)
    n = args.recipients
    variants = [v for v in VARIANTS if v != "redis" or args.redis]
    sink, _ = ensure_postfix_tools()
    port = free_port()
    sink_process = start_sink(sink, port)
    rate = "never binds" if args.rate >= 1_000_000 else f"{args.rate:,.0f}/s"
    print(
        f"global limits: {n:,} recipients over {args.domains:,} domains, one node, PostgreSQL ledger, smtp-sink on "
        f"127.0.0.1:{port}, pool {POOL_SIZE}, max_per_domain {MAX_PER_DOMAIN}, rate {rate}; median of {args.runs} runs",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        with tempfile.TemporaryDirectory(prefix="topslot-bench-") as tmp:
            store = harness.Ledger(args.pg, n, Path(tmp), seeder(args.domains))
            for _ in range(args.runs):
                for variant in variants:  # alternating, so the machine's drift falls on every variant alike
                    url = store.fresh()
                    try:
                        spec = {"variant": variant, "url": url, "port": port, "rate": args.rate,
                                "redis": args.redis}  # fmt: skip
                        r = run_child(spec)
                    finally:
                        store.done(url)
                    if r["sent"] != n:
                        sys.exit(f"{variant}: sent {r['sent']:,} of {n:,}: {r['states']}; {r.get('errors')}")
                    results[variant].append(r)
                    print(
                        f"    {variant:<11} {n / r['seconds']:>7,.0f} msg/s  limit round trips/msg "
                        f"{r['limit_round_trips'] / n:.3f}  ledger statements/msg {r['ledger_statements'] / n:.3f}",
                        flush=True,
                    )
    finally:
        sink_process.terminate()
        sink_process.wait(timeout=10)

    print("\nsummary (medians)")
    base = statistics.median(n / r["seconds"] for r in results["in-process"])
    for variant, runs in results.items():
        rate_ = statistics.median(n / r["seconds"] for r in runs)
        trips = statistics.median(r["limit_round_trips"] / n for r in runs)
        ledger = statistics.median(r["ledger_statements"] / n for r in runs)
        print(
            f"  {variant:<11} {rate_:>7,.0f} msg/s  {rate_ / base:>5.2f}× in-process  "
            f"limit round trips/msg {trips:.3f}  ledger statements/msg {ledger:.3f}"
        )


if __name__ == "__main__":
    main()
