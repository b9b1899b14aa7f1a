"""Prometheus metrics and the health endpoints, against the real thing: a tracking server scraped over
HTTP after real sends (aiosmtpd) and real tracking hits, the scrape checked by ``promtool``; the
metrics module's own rules (bounded error codes, the database snapshot) on their own."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from dispatch.fixtures import DUE, NOW, campaign, import_people, settings
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from topslot import metrics
from topslot.clock import FakeClock
from topslot.dispatch.service import DispatchService
from topslot.errors import TransientSendError
from topslot.links.keys import load_keyring
from topslot.runtime.service import Daemon
from topslot.scheduling.scheduler import BucketScheduler
from topslot.settings import Settings
from topslot.store.schema import coupon_pools
from topslot.tracking.server import TrackingOptions, TrackingServer

HUMAN_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)


class Inbox:
    """Takes every message, except for ``refused`` recipients (550)."""

    def __init__(self, refused: str = "") -> None:
        self.messages: list[bytes] = []
        self.refused = refused

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: ANN001, N802
        if address == self.refused:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802 - aiosmtpd's hook
        self.messages.append(envelope.content)
        return f"250 2.0.0 Ok: queued as A{len(self.messages)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) → value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def registry_value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------- the module


def test_error_codes_are_bounded_per_provider() -> None:
    provider = "test-bounded"
    labels = [metrics.error_code(provider, 500 + i) for i in range(metrics.MAX_ERROR_CODES + 5)]
    assert labels[: metrics.MAX_ERROR_CODES] == [str(500 + i) for i in range(metrics.MAX_ERROR_CODES)]
    assert set(labels[metrics.MAX_ERROR_CODES :]) == {"other"}
    assert metrics.error_code(provider, 500) == "500"  # a code already seen keeps its label
    assert metrics.error_code(provider, None) == "none"
    assert metrics.error_code("test-other", "has spaces: and text") == "other"
    assert metrics.error_code("test-other", "lost_before_dot") == "lost_before_dot"


def test_send_observation_counts_latency_and_error_code() -> None:
    before = registry_value("topslot_provider_errors_total", provider="test-send", code="421")
    count = registry_value("topslot_send_latency_seconds_count", provider="test-send")
    metrics.observe_send("test-send", 0.2, TransientSendError("try later", code=421))
    metrics.observe_send("test-send", 0.1, None)
    assert registry_value("topslot_provider_errors_total", provider="test-send", code="421") == before + 1
    assert registry_value("topslot_send_latency_seconds_count", provider="test-send") == count + 2


async def test_database_snapshot_is_cached_and_says_how_old() -> None:
    reads = 0

    async def read() -> tuple[dict[str, int], dict[str, int]]:
        nonlocal reads
        reads += 1
        return {"planned": 4, "retry_wait": 1}, {"spring": 7}

    snapshot = metrics.DatabaseSnapshot(read)
    assert [f.samples for f in snapshot.collect()] == [[], [], []]  # nothing before the first read
    await snapshot.refresh()
    scraped = samples(metrics.exposition(snapshot).decode())
    scraped_again = samples(metrics.exposition(snapshot).decode())
    assert reads == 1  # scrapes read the cache, never the database
    assert value(scraped, "topslot_ledger_backlog", state="planned") == 4
    assert value(scraped, "topslot_ledger_backlog", state="sending") == 0  # every backlog state is shown
    assert value(scraped, "topslot_coupon_stock", pool="spring") == 7
    assert ("topslot_metrics_snapshot_age_seconds", frozenset()) in scraped_again


async def test_database_snapshot_failure_keeps_the_last_one() -> None:
    async def hangs() -> tuple[dict[str, int], dict[str, int]]:
        await asyncio.Event().wait()
        raise AssertionError

    snapshot = metrics.DatabaseSnapshot(hangs, timeout=0.05)
    snapshot.backlog = {"planned": 2}
    with pytest.raises(TimeoutError):
        await snapshot.refresh()
    assert snapshot.backlog == {"planned": 2}


# ---------------------------------------------------------------- live: send, track, scrape, promtool


async def test_live_scrape_after_real_sends_and_hits(engine: AsyncEngine, tmp_path: Path) -> None:
    inbox = Inbox(refused="cyd@c.example")
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    port = free_port()
    s = settings(tmp_path, smtp.port, tracking_port=port, tracking_base_url=f"http://127.0.0.1:{port}")
    c = campaign()
    clock = FakeClock(NOW)
    service = DispatchService(engine, s, clock, node="metrics")
    tracking = TrackingServer(engine, service.keyring, clock, TrackingOptions.from_settings(s))
    await tracking.start()
    before = {
        "sent": registry_value("topslot_deliveries_total", channel="email", provider="smtp", state="sent"),
        "failed": registry_value("topslot_deliveries_total", channel="email", provider="smtp", state="failed"),
        "550": registry_value("topslot_provider_errors_total", provider="smtp", code="550"),
        "latency": registry_value("topslot_send_latency_seconds_count", provider="smtp"),
        "buckets": registry_value("topslot_bucket_lateness_seconds_count", channel="email"),
        "opens": registry_value("topslot_tracking_events_total", kind="open", label="human"),
    }
    try:
        await import_people(engine, tmp_path, ["ann@a.example", "bob@b.example", "cyd@c.example"])
        async with engine.begin() as conn:
            await conn.execute(insert(coupon_pools).values(name="spring", total=10, available=7, created_at=NOW,
                                                           updated_at=NOW))  # fmt: skip
        scheduler = BucketScheduler(
            engine, s, clock, owner=service.owner, on_claimed=service.dispatch, on_finished=service.finish_bucket
        )
        await service.on_campaigns_changed({c.id: c})
        await scheduler.on_campaigns_changed({c.id: c})
        clock.set(DUE - timedelta(minutes=1))
        assert await scheduler.fire_bucket(c.id, "email", DUE) == 3
        assert len(inbox.messages) == 2  # cyd's address was refused

        clock.advance(timedelta(minutes=20))
        html = inbox.messages[0].decode("ascii", "replace").replace("=\r\n", "").replace("=3D", "=")
        pixel = re.search(rf"http://127\.0\.0\.1:{port}/o/[A-Za-z0-9_-]+\.gif", html)
        assert pixel is not None
        async with aiohttp.ClientSession(headers={"User-Agent": HUMAN_UA}) as http:
            async with http.get(pixel.group(0)) as r:
                assert r.status == 200
            await tracking.buffer.flush()
            assert tracking.snapshot is not None
            await tracking.snapshot.refresh()  # what the background task does every few seconds
            async with http.get(f"{tracking.url}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await r.text()
    finally:
        await tracking.close()
        await service.close()
        smtp.stop()

    scraped = samples(text)
    assert value(scraped, "topslot_deliveries_total", channel="email", provider="smtp", state="sent") == (
        before["sent"] + 2
    )
    assert value(scraped, "topslot_deliveries_total", channel="email", provider="smtp", state="failed") == (
        before["failed"] + 1
    )
    assert value(scraped, "topslot_provider_errors_total", provider="smtp", code="550") == before["550"] + 1
    assert value(scraped, "topslot_send_latency_seconds_count", provider="smtp") == before["latency"] + 3
    assert value(scraped, "topslot_bucket_lateness_seconds_count", channel="email") == before["buckets"] + 1
    assert value(scraped, "topslot_tracking_events_total", kind="open", label="human") == before["opens"] + 1
    assert value(scraped, "topslot_ledger_backlog", state="planned") == 0
    assert ("topslot_ledger_backlog", frozenset({("state", "unknown")})) in scraped
    assert value(scraped, "topslot_coupon_stock", pool="spring") == 7
    assert ("topslot_smtp_connections_open", frozenset({("server", "local")})) in scraped
    assert ("topslot_campaign_reload_failures_total", frozenset()) in scraped
    assert not re.search(r'(delivery|contact|campaign)_id="', text)  # low cardinality: no ids

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'): the scrape was not linted")
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()


# ---------------------------------------------------------------- /readyz and /healthz


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            return r.status, json.loads(await r.read())


async def test_readyz_says_when_the_database_is_unreachable(engine: AsyncEngine, tmp_path: Path) -> None:
    s = settings(tmp_path, None, tracking_port=0)
    ring = load_keyring(s)
    clock = FakeClock(datetime(2027, 5, 5, tzinfo=UTC))
    async with TrackingServer(engine, ring, clock, TrackingOptions(port=0)) as server:
        status, body = await get_json(f"{server.url}/readyz")
        assert (status, body) == (200, {"status": "ready", "checks": {"database": "ok"}})
        server.ready_checks["campaigns"] = lambda: "campaigns not loaded yet"
        status, body = await get_json(f"{server.url}/readyz")
        assert status == 503 and body["checks"] == {"database": "ok", "campaigns": "campaigns not loaded yet"}

    gone = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}")
    try:
        async with TrackingServer(gone, ring, clock, TrackingOptions(port=0, metrics=False)) as server:
            status, body = await get_json(f"{server.url}/readyz")
            assert status == 503 and body["status"] == "not_ready"
            assert str(body["checks"]["database"]).startswith("unreachable: ")  # type: ignore[index]
            status, body = await get_json(f"{server.url}/healthz")  # alive all the same
            assert status == 200 and body["status"] == "ok"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.url}/metrics") as r:
                    assert r.status == 404  # metrics switched off
    finally:
        await gone.dispose()


async def test_daemon_is_ready_once_campaigns_loaded_and_scheduler_running(tmp_path: Path) -> None:
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    s = Settings(
        config_dir=tmp_path / "config",
        var_dir=tmp_path / "var",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}",
        tracking_port=0,
    )
    async with Daemon(s, watch=False, handle_signals=False, configure_logs=False) as daemon:
        assert daemon.tracking is not None and daemon.scheduler is not None
        url = daemon.tracking.url
        status, body = await get_json(f"{url}/readyz")
        assert status == 200, body
        assert body["checks"] == {"database": "ok", "campaigns": "ok", "scheduler": "ok"}
        daemon.scheduler.shutdown()
        status, body = await get_json(f"{url}/readyz")
        assert status == 503 and body["checks"]["scheduler"] == "scheduler not running"  # type: ignore[index]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 200
                names = {f.name for f in text_string_to_metric_families(await r.text())}
    assert {"topslot_deliveries", "topslot_ledger_backlog", "topslot_campaign_reload_failures"} <= names


def test_a_helpers_send_stats_add_up_in_this_processs_registry() -> None:
    """What a helper process reports (``take_unreported``) is added bucket by bucket (``add_sends``)."""
    labels = {"provider": "test-helper"}
    helper = metrics.SendStats()
    helper.observe("test-helper", 0.005, None)  # on a bucket bound: counted in that bucket (le)
    helper.observe("test-helper", 0.3, "421")
    helper.observe("test-helper", 99.0, "421")  # above every bound: +Inf only
    metrics.observe_send("test-helper", 0.02, None)  # this process's own
    metrics.add_sends(helper)
    value = metrics.REGISTRY.get_sample_value
    assert value("topslot_send_latency_seconds_count", labels) == 4
    assert value("topslot_send_latency_seconds_sum", labels) == pytest.approx(99.325)
    assert value("topslot_send_latency_seconds_bucket", {**labels, "le": "0.005"}) == 1
    assert value("topslot_send_latency_seconds_bucket", {**labels, "le": "0.025"}) == 2
    assert value("topslot_send_latency_seconds_bucket", {**labels, "le": "60.0"}) == 3
    assert value("topslot_send_latency_seconds_bucket", {**labels, "le": "+Inf"}) == 4
    assert value("topslot_provider_errors_total", {**labels, "code": "421"}) == 2
    assert metrics.take_unreported() is None  # not a helper: nothing is kept for a report
