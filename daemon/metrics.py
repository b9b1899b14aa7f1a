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
``topslot_campaign_reload_failures_total``    counter    (none)                      a reload that raised
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
(``topslot_deliveries_total``) and the lateness of the whole bucket (every process's sends);
send latency and provider errors are this process's own sends only; the ledger backlog and the
coupon stock come from the database and so cover every process and node.

Cardinality is bounded by design: no contact, delivery or campaign ids; provider error codes are
the provider's short codes (an SMTP reply code, a Twilio error code, a named local condition) and
at most ``MAX_ERROR_CODES`` distinct ones per provider; any further code is counted as ``other``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from daemon.delivery import DeliveryState as S
from daemon.logs import get_logger

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
SEND_LATENCY = Histogram(
    "topslot_send_latency_seconds",
    "Time a provider took to answer one send (accepted or refused), in seconds.",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "topslot_provider_errors",
    "Sends a provider refused or failed, by provider and error code (SMTP reply, Twilio code, local condition).",
    ["provider", "code"],
    registry=REGISTRY,
)
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
RELOAD_FAILURES = Counter(
    "topslot_campaign_reload_failures",
    "Campaign reloads (file change, SIGHUP) that failed with an error.",
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


_send_latency: dict[str, Any] = {}  # provider → its SEND_LATENCY child (one look-up per provider, not per send)


def observe_send(provider: str, seconds: float, error: BaseException | None) -> None:
    """One send's answer: its latency and, if it raised, its error code."""
    child = _send_latency.get(provider)
    if child is None:
        child = _send_latency[provider] = SEND_LATENCY.labels(provider=provider)
    child.observe(max(0.0, seconds))
    if error is not None:
        PROVIDER_ERRORS.labels(provider=provider, code=error_code(provider, getattr(error, "code", None))).inc()


def observe_bucket(channel: str, lateness_s: float) -> None:
    BUCKET_LATENESS.labels(channel=channel).observe(max(0.0, lateness_s))


def count_tracking_event(kind: str, label: str) -> None:
    TRACKING_EVENTS.labels(kind=kind, label=label).inc()


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
        ``daemon.store.ledger.metrics_snapshot`` bound to an engine."""
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
