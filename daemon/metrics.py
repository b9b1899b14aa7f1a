"""Prometheus metrics: every metric the daemon exports, defined once, in one dedicated registry.

``REGISTRY`` is this module's own ``CollectorRegistry`` (never ``prometheus_client``'s global one):
tests and helper processes stay isolated, and nothing a library registers globally leaks into the
scrape. The tracking server serves it on ``GET /metrics`` (text format 0.0.4) together with the
``DatabaseSnapshot`` of its daemon (``exposition``).

Counted where the event happens, in this process:

============================================  =========  ==========================  ==========================
name                                          type       labels                      counted by
============================================  =========  ==========================  ==========================
``topslot_deliveries_total``                  counter    channel, provider, state    the dispatcher, per outcome
``topslot_send_latency_seconds``              histogram  provider                    a messenger's ``send``
``topslot_provider_errors_total``             counter    provider, code              a send that raised
``topslot_bucket_lateness_seconds``           histogram  channel                     the scheduler, per bucket
``topslot_tracking_events_total``             counter    kind, label                 the tracking event writer
``topslot_email_feedback_total``              counter    kind, result                the feedback receiver
``topslot_campaign_reload_failures_total``    counter    (none)                      a reload that raised
``topslot_shared_limit_failures_total``       counter    store                       a failed shared-limit round trip
============================================  =========  ==========================  ==========================

Read at scrape time:

- ``topslot_smtp_connections_open{server}``: the open connections of every SMTP pool of this
  process (pools register themselves in ``SMTP_POOLS``, a weak set);
- ``topslot_ledger_backlog{state}`` and ``topslot_coupon_stock{pool}`` (and
  ``topslot_metrics_snapshot_age_seconds``): a ``DatabaseSnapshot`` refreshed in the background
  every ``interval`` seconds (each query with a short timeout). A scrape reads the cached snapshot
  only: it never waits for the database, never blocks the loop, and says how old what it shows is.

Helper processes (``dispatch_processes`` > 1): each has its registry, which nobody scrapes. The
main process counts the outcomes the helpers send back with each bucket's tally
(``topslot_deliveries_total``), the lateness of the whole bucket (every process's sends), and the
``SendStats`` each helper sends with its reply (send latency and provider errors: ``report_sends``,
``take_unreported``, ``add_sends``); SMTP connections are this process's own; the ledger backlog and
the coupon stock come from the database and so cover every process and node.

Cardinality is bounded by design: no contact, delivery or campaign ids; provider error codes are
the provider's short codes (an SMTP reply code, a Twilio error code, a named local condition) and
at most ``MAX_ERROR_CODES`` distinct ones per provider; any further code is counted as ``other``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import re
import time
import weakref
from collections import Counter as CounterOf
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from topslot.delivery import DeliveryState as S
from topslot.logs import get_logger

log = get_logger("metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the classic text format, what every Prometheus reads
REGISTRY = CollectorRegistry(auto_describe=True)

MAX_ERROR_CODES = 50  # distinct codes per provider; more are counted as "other"
BACKLOG_STATES = (S.PLANNED, S.CLAIMED, S.SENDING, S.RETRY_WAIT, S.UNKNOWN)  # rows not settled yet

DELIVERIES = Counter(
    "topslot_deliveries",
    "Delivery outcomes recorded by the dispatcher (this process and its helpers), by channel, provider and state.",
    ["channel", "provider", "state"],
    registry=REGISTRY,
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class SendStats:
    """Sends answered in one process, as plain data a helper process sends back to the main one:
    per provider, the count in each latency bucket (``LATENCY_BUCKETS``, then +Inf; not cumulative)
    and the sum of seconds; per (provider, error code label), the sends that raised."""

    buckets: dict[str, list[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: CounterOf[tuple[str, str]] = field(default_factory=CounterOf)

    def observe(self, provider: str, seconds: float, code: str | None) -> None:
        counts = self.buckets.get(provider)
        if counts is None:
            counts = self.buckets[provider] = [0] * (len(LATENCY_BUCKETS) + 1)
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: a bucket holds its bound
        self.seconds[provider] = self.seconds.get(provider, 0.0) + seconds
        if code is not None:
            self.errors[(provider, code)] += 1

    def add(self, other: SendStats) -> None:
        for provider, counts in other.buckets.items():
            mine = self.buckets.setdefault(provider, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, n in enumerate(counts):
                mine[i] += n
            self.seconds[provider] = self.seconds.get(provider, 0.0) + other.seconds.get(provider, 0.0)
        self.errors.update(other.errors)

    def __bool__(self) -> bool:
        return bool(self.buckets or self.errors)


class _SendCollector(Collector):
    """``topslot_send_latency_seconds`` and ``topslot_provider_errors_total`` from ``SendStats``:
    this process's sends and what its helpers reported (a histogram that can add another one's
    buckets, which ``prometheus_client.Histogram`` cannot)."""

    def __init__(self) -> None:
        self.stats = SendStats()

    def collect(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "topslot_send_latency_seconds",
            "Time a provider took to answer one send (accepted or refused), in seconds; helpers' sends included.",
            labels=["provider"],
        )
        for provider, counts in sorted(self.stats.buckets.items()):
            cumulative = list(itertools.accumulate(counts))
            bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
            latency.add_metric([provider], list(zip(bounds, cumulative, strict=True)), self.stats.seconds[provider])
        errors = CounterMetricFamily(
            "topslot_provider_errors",
            "Sends a provider refused or failed, by provider and error code (SMTP reply, Twilio code, local "
            "condition); helpers' sends included.",
            labels=["provider", "code"],
        )
        for (provider, code), n in sorted(self.stats.errors.items()):
            errors.add_metric([provider, code], n)
        yield latency
        yield errors


SENDS = _SendCollector()
REGISTRY.register(SENDS)
_unreported: SendStats | None = None  # a helper process's sends since its last report (``report_sends``)
BUCKET_LATENESS = Histogram(
    "topslot_bucket_lateness_seconds",
    "Per finished bucket: seconds after the slot at which its last message was accepted (0 when on time).",
    ["channel"],
    buckets=(0.0, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
    registry=REGISTRY,
)
TRACKING_EVENTS = Counter(
    "topslot_tracking_events",
    "Tracking events written (opens, clicks), by kind and the label they were written with.",
    ["kind", "label"],
    registry=REGISTRY,
)
EMAIL_FEEDBACK = Counter(
    "topslot_email_feedback",
    "Returned mail read by the feedback receiver or bounces import, by kind and what was done with it.",
    ["kind", "result"],
    registry=REGISTRY,
)
RELOAD_FAILURES = Counter(
    "topslot_campaign_reload_failures",
    "Campaign reloads (file change, SIGHUP) that failed with an error.",
    registry=REGISTRY,
)

SHARED_LIMIT_FAILURES = Counter(
    "topslot_shared_limit_failures",
    "Round trips to the store of the shared rate and domain limits (postgresql, redis) that failed.",
    ["store"],
    registry=REGISTRY,
)

_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_codes: dict[str, set[str]] = {}


def error_code(provider: str, code: object) -> str:
    """The label for a provider's error ``code``: the code itself while the provider has produced at
    most ``MAX_ERROR_CODES`` distinct ones, ``other`` beyond (or when it is not a short token),
    ``none`` when the error had no code."""
    if code is None:
        return "none"
    text = str(code)
    if not _CODE.match(text):
        return "other"
    seen = _codes.setdefault(provider, set())
    if text not in seen:
        if len(seen) >= MAX_ERROR_CODES:
            return "other"
        seen.add(text)
    return text


def count_outcome(channel: str, provider: str | None, state: str, n: int = 1) -> None:
    if n:
        DELIVERIES.labels(channel=channel, provider=provider or "none", state=str(state)).inc(n)


def observe_send(provider: str, seconds: float, error: BaseException | None) -> None:
    """One send's answer: its latency and, if it raised, its error code."""
    code = error_code(provider, getattr(error, "code", None)) if error is not None else None
    SENDS.stats.observe(provider, max(0.0, seconds), code)
    if _unreported is not None:
        _unreported.observe(provider, max(0.0, seconds), code)


def report_sends() -> None:
    """In a helper process: keep its sends for ``take_unreported`` too (its registry is not scraped)."""
    global _unreported
    _unreported = SendStats()


def take_unreported() -> SendStats | None:
    """A helper's sends since the last call (None outside helpers), for the main process's ``add_sends``."""
    global _unreported
    if _unreported is None:
        return None
    taken, _unreported = _unreported, SendStats()
    return taken


def add_sends(stats: SendStats) -> None:
    """In the main process: a helper's reported sends, counted in the scraped registry."""
    for provider, code in stats.errors:
        error_code(provider, code)  # the same bound on distinct codes as this process's own
    SENDS.stats.add(stats)


def count_feedback(kind: str, result: str) -> None:
    """One returned message: ``kind`` (hard_bounce, complaint, auto_reply...), ``result`` (recorded,
    repeat, ignored, unmatched)."""
    EMAIL_FEEDBACK.labels(kind=kind, result=result).inc()


def observe_bucket(channel: str, lateness_s: float) -> None:
    BUCKET_LATENESS.labels(channel=channel).observe(max(0.0, lateness_s))


def count_tracking_event(kind: str, label: str, n: int = 1) -> None:
    TRACKING_EVENTS.labels(kind=kind, label=label).inc(n)


# ---------------------------------------------------------------- read at scrape time


SnapshotReader = Callable[[], Awaitable[tuple[Mapping[str, int], Mapping[str, int]]]]
SMTP_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()  # every SmtpPool of this process


class _SmtpCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "topslot_smtp_connections_open", "SMTP connections open now, by configured server.", labels=["server"]
        )
        totals: dict[str, int] = {}
        for pool in list(SMTP_POOLS):
            for server in pool.status():
                totals[server.name] = totals.get(server.name, 0) + server.open_connections
        for name, n in sorted(totals.items()):
            family.add_metric([name], n)
        yield family


REGISTRY.register(_SmtpCollector())


class DatabaseSnapshot(Collector):
    """Ledger backlog by state and coupon stock per pool, read from the database every ``interval``
    seconds by a background task (``start``/``close``), each read bounded by ``timeout``. ``collect``
    yields the last snapshot (nothing before the first one) and its age; a failed read keeps the
    previous snapshot, which then grows older."""

    def __init__(self, read: SnapshotReader, *, interval: float = 5.0, timeout: float = 2.0):
        """``read``: the backlog (state → rows) and the stock (pool → codes available), e.g.
        ``topslot.store.ledger.metrics_snapshot`` bound to an engine."""
        self.read = read
        self.interval = interval
        self.timeout = timeout
        self.backlog: dict[str, int] | None = None
        self.stock: dict[str, int] | None = None
        self.taken_at: float | None = None  # time.monotonic()
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-snapshot")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Read the database now (raises what the read raised, or TimeoutError)."""
        async with asyncio.timeout(self.timeout):
            backlog, stock = await self.read()
        self.backlog = {str(s): backlog.get(str(s), 0) for s in BACKLOG_STATES}
        self.stock = dict(stock)
        self.taken_at = time.monotonic()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if self.failures == 1 or self.failures % 60 == 0:
                    log.warning("metrics_snapshot_failed", error=type(exc).__name__, failures=self.failures)
            await asyncio.sleep(self.interval)

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "topslot_ledger_backlog", "Ledger rows not settled yet, by state (database snapshot).", labels=["state"]
        )
        stock = GaugeMetricFamily(
            "topslot_coupon_stock", "Coupon codes still available, per imported pool (database snapshot).",
            labels=["pool"],
        )  # fmt: skip
        age = GaugeMetricFamily(
            "topslot_metrics_snapshot_age_seconds", "Age of the database snapshot the ledger and coupon gauges show."
        )
        for state, n in (self.backlog or {}).items():
            backlog.add_metric([state], n)
        for pool, n in sorted((self.stock or {}).items()):
            stock.add_metric([pool], n)
        if self.taken_at is not None:
            age.add_metric([], round(time.monotonic() - self.taken_at, 3))
        yield backlog
        yield stock
        yield age


class _Both(Collector):
    def __init__(self, *collectors: Collector):
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def exposition(snapshot: DatabaseSnapshot | None = None) -> bytes:
    """The text a scrape gets: this process's metrics, and the database snapshot when there is one."""
    if snapshot is None:
        return generate_latest(REGISTRY)
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Both(REGISTRY, snapshot))
    return generate_latest(scrape)
