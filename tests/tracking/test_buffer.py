"""The event buffer: bounded, batched, never blocking, visible when it drops or fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from topslot.tracking.buffer import EventBuffer
from topslot.tracking.hits import Hit

AT = datetime(2027, 5, 6, 8, 0, tzinfo=UTC)


def hit(n: int) -> Hit:
    return Hit("open", n, AT, "GET", "UA", None, "127.0.0.1")


class Sink:
    def __init__(self, fail: int = 0, delay: float = 0.0):
        self.batches: list[list[int]] = []
        self.fail = fail
        self.delay = delay
        self.calls = 0

    async def __call__(self, hits: Sequence[Hit]) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database is down")
        self.batches.append([h.delivery_id for h in hits])

    @property
    def ids(self) -> list[int]:
        return [i for b in self.batches for i in b]


async def test_hits_are_written_in_batches_in_order_by_the_background_task() -> None:
    sink = Sink()
    buffer = EventBuffer(sink, batch_size=100, interval=0.02)
    buffer.start()
    for n in range(250):
        assert buffer.add(hit(n)) is True
    assert sink.calls == 0  # add() never waits for the sink
    async with asyncio.timeout(5):
        while len(sink.ids) < 250:
            await asyncio.sleep(0.01)
    await buffer.close()
    assert sink.ids == list(range(250)) and max(len(b) for b in sink.batches) <= 100
    assert buffer.stats.written == 250 and buffer.stats.pending == 0


async def test_a_full_buffer_counts_drops_and_warns_once_per_interval() -> None:
    sink = Sink()
    buffer = EventBuffer(sink, capacity=10, batch_size=1000, interval=0.02, warn_interval=3600)
    with capture_logs() as logs:
        buffer.start()
        accepted = [buffer.add(hit(n)) for n in range(25)]
        await asyncio.sleep(0.1)  # flushed; the warning is due
        for n in range(25, 40):
            buffer.add(hit(n))  # 10 accepted, 5 more dropped
        await asyncio.sleep(0.1)
        warned_before_close = [e for e in logs if e["event"] == "tracking_events_dropped"]
        await buffer.close()
    assert accepted == [True] * 10 + [False] * 15
    assert (
        buffer.stats.dropped == 20 and buffer.stats.accepted == 20 and sink.ids == list(range(10)) + list(range(25, 35))
    )
    assert len(warned_before_close) == 1 and warned_before_close[0]["dropped"] == 15
    assert warned_before_close[0]["log_level"] == "warning"
    final = [e for e in logs if e["event"] == "tracking_events_dropped"][-1]
    assert final["dropped_total"] == 20  # close() reports what the interval held back


async def test_pace_holds_answers_back_in_proportion_to_the_backlog() -> None:
    buffer = EventBuffer(Sink(), capacity=1000, batch_size=1000, interval=60, max_pause=0.02)  # never flushes
    for n in range(100):
        buffer.add(hit(n))
    assert buffer.pace() == 0.0 and buffer.stats.paced == 0  # up to capacity // 10: the writer keeps up
    for n in range(100, 550):
        buffer.add(hit(n))
    assert buffer.pace() == pytest.approx(0.01)  # half-way from the soft limit to capacity
    for n in range(550, 1200):
        buffer.add(hit(n))
    assert buffer.pace() == pytest.approx(0.02) and buffer.stats.dropped == 200  # full: capped, and counting
    assert buffer.stats.paced == 2


async def test_a_failed_flush_keeps_the_hits_and_retries() -> None:
    sink = Sink(fail=2)
    buffer = EventBuffer(sink, batch_size=50, interval=0.01, max_backoff=0.02)
    with capture_logs() as logs:
        buffer.start()
        for n in range(30):
            buffer.add(hit(n))
        async with asyncio.timeout(5):
            while len(sink.ids) < 30:
                await asyncio.sleep(0.01)
        await buffer.close()
    assert sink.ids == list(range(30)) and buffer.stats.failed_flushes == 2 and buffer.stats.lost == 0
    assert [e["event"] for e in logs].count("tracking_flush_failed") == 2
    assert "database is down" in logs[0]["error"]


async def test_hits_are_numbered_in_the_order_they_are_written_and_keep_their_numbers_on_retry() -> None:
    seen: list[list[int]] = []
    fails = [True]

    async def sink(hits: Sequence[Hit]) -> None:
        seen.append([h.seq for h in hits])
        if fails.pop() if fails else False:
            raise ConnectionError("answer lost")

    buffer = EventBuffer(sink, batch_size=4, interval=60)
    for n in range(6):
        buffer.add(hit(n))
    await buffer.flush()  # the first batch fails and goes back in front; then everything
    await buffer.flush()
    assert seen == [[1, 2, 3, 4], [1, 2, 3, 4], [5, 6]]
    buffer.add(hit(7))
    await buffer.flush()
    assert seen[-1] == [7] and buffer.stats.written == 7


async def test_a_repeated_answer_counts_as_written() -> None:
    class Answer:
        written, unknown, repeated = 1, 0, 2

    async def sink(hits: Sequence[Hit]) -> Answer:
        return Answer()

    buffer = EventBuffer(sink, batch_size=10, interval=60)
    for n in range(3):
        buffer.add(hit(n))
    await buffer.flush()
    assert buffer.stats.written == 3


async def test_a_batch_that_always_fails_is_given_up_counted_and_logged() -> None:
    sink = Sink(fail=1_000_000)
    buffer = EventBuffer(sink, batch_size=50, interval=0.01, max_attempts=3, max_backoff=0.01)
    with capture_logs() as logs:
        buffer.start()
        for n in range(5):
            buffer.add(hit(n))
        async with asyncio.timeout(5):
            while buffer.stats.lost < 5:
                await asyncio.sleep(0.01)
        assert buffer.add(hit(99))  # still taking hits
        buffer.close_timeout = 0.05
        await buffer.close()
    assert buffer.stats.lost == 6 and sink.ids == []
    lost = [e for e in logs if e["event"] == "tracking_events_lost"]
    assert lost[0]["reason"] == "max_attempts" and lost[0]["log_level"] == "error"
    assert sum(e["events"] for e in lost) == 6  # every hit given up is accounted for, at close too


async def test_close_flushes_everything_and_refuses_more() -> None:
    sink = Sink(delay=0.01)
    buffer = EventBuffer(sink, batch_size=7, interval=60)
    buffer.start()
    for n in range(20):
        buffer.add(hit(n))
    await buffer.close()
    assert sink.ids == list(range(20))
    assert buffer.add(hit(21)) is False and buffer.stats.dropped == 1


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        EventBuffer(Sink(), capacity=0)
