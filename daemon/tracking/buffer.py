"""``EventBuffer``: opens and clicks wait here, in memory, and are written in batches.

- ``add`` never waits and never raises: a request handler calls it and answers at once;
- a background task flushes every ``interval`` seconds (sooner when a batch is full), at most
  ``batch_size`` hits per sink call (the sink writes one transaction per call), four times that
  while a backlog of four batches waits;
- paced: past ``capacity // 10`` pending hits the writer is behind, and ``pace()`` tells request
  handlers to wait a few milliseconds before answering (growing with the backlog, at most
  ``max_pause``), so clients slow down to what the database takes instead of filling the buffer;
- bounded: at ``capacity`` pending hits, new hits are dropped and counted (``stats.dropped``,
  shown on ``/healthz``), with the warning ``tracking_events_dropped`` at most once per
  ``warn_interval`` seconds;
- a failed flush puts its batch back in front and retries with a growing pause (up to
  ``max_backoff``); a hit that failed ``max_attempts`` times is given up, counted as ``lost`` and
  logged (``tracking_events_lost``), so one poisoned batch cannot stall the buffer for ever;
- ``close`` stops the task and flushes what is left (within ``close_timeout``);
- numbered: each hit taken gets the next ``Hit.seq`` (from 1). Batches leave in that order and a
  failed one goes back in front, so a batch only ever holds hits numbered after every hit stored
  before it — what lets the writer skip a batch already stored (``topslot.tracking.ingest``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from topslot.logs import get_logger
from topslot.tracking.hits import Hit

log = get_logger("topslot.tracking")

Sink = Callable[[Sequence[Hit]], Awaitable[Any]]
BACKLOG_FACTOR = 4


@dataclass(slots=True)
class BufferStats:
    accepted: int = 0  # hits taken into the buffer
    written: int = 0  # hits stored
    unknown: int = 0  # hits whose delivery does not exist (not stored)
    dropped: int = 0  # hits refused because the buffer was full
    paced: int = 0  # answers held back a little because the writer was behind
    lost: int = 0  # hits given up after max_attempts failed flushes (or left at close)
    failed_flushes: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class EventBuffer:
    def __init__(
        self,
        sink: Sink,
        *,
        capacity: int = 100_000,
        batch_size: int = 250,
        interval: float = 0.2,
        warn_interval: float = 10.0,
        max_attempts: int = 20,
        max_backoff: float = 5.0,
        close_timeout: float = 10.0,
        max_pause: float = 0.02,
    ):
        if capacity < 1 or batch_size < 1 or interval <= 0:
            raise ValueError("capacity and batch_size must be positive, interval above zero")
        self._sink = sink
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self.warn_interval = warn_interval
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.close_timeout = close_timeout
        self.max_pause = max_pause
        self._soft_limit = capacity // 10
        self._queue: deque[Hit] = deque()
        self._stats = BufferStats()
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._closed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # consecutive failed flushes
        self._warned_at: float | None = None
        self._warned_dropped = 0
        self._seq = 0  # the last number given (Hit.seq)

    # ---------------------------------------------------------------- request side

    def add(self, hit: Hit) -> bool:
        """Queue a hit; False (and counted) when the buffer is full or closed."""
        queue = self._queue
        if len(queue) >= self.capacity or self._closing:
            self._stats.dropped += 1
            return False
        self._seq += 1
        hit.seq = self._seq
        queue.append(hit)
        self._stats.accepted += 1
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def pace(self) -> float:
        """Seconds a handler should wait before answering: 0 while the writer keeps up, then in
        proportion to the backlog beyond the soft limit, up to ``max_pause`` near ``capacity``."""
        excess = len(self._queue) - self._soft_limit
        if excess <= 0:
            return 0.0
        self._stats.paced += 1
        return self.max_pause * min(1.0, excess / (self.capacity - self._soft_limit))

    @property
    def stats(self) -> BufferStats:
        self._stats.pending = len(self._queue)
        return self._stats

    def __len__(self) -> int:
        return len(self._queue)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="topslot-tracking-flush")

    async def close(self) -> None:
        """Stop taking hits, stop the task, write what is left (giving up after ``close_timeout``)."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        deadline = time.monotonic() + self.close_timeout
        while self._queue and time.monotonic() < deadline:
            if not await self._flush_once():
                await asyncio.sleep(min(self._backoff(), max(0.0, deadline - time.monotonic())))
        if self._queue:
            left = len(self._queue)
            self._stats.lost += left
            self._queue.clear()
            log.error("tracking_events_lost", events=left, reason="shutdown")
        self._warn_dropped(force=True)

    async def flush(self) -> None:
        """Write everything pending now (tests, shutdown), including a batch already being written;
        failures stay queued."""
        while True:
            async with self._writing:  # wait out the background flusher's batch in progress
                if not self._queue:
                    return
                if not await self._write_batch():
                    return

    # ---------------------------------------------------------------- the flusher

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                break
            while self._queue:
                if not await self._flush_once():
                    await self._sleep(self._backoff())
                    break
                if len(self._queue) < self.batch_size:
                    break  # the rest waits for the next tick: batches stay large under load
            self._warn_dropped()

    async def _sleep(self, seconds: float) -> None:
        """Pause after a failure; cut short only by ``close`` (a full batch does not hurry a retry)."""
        try:
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _flush_once(self) -> bool:
        """Write one batch; True on success. One writer at a time: ``flush()`` waits for a batch the
        background flusher is writing, so "flushed" means stored."""
        async with self._writing:
            return await self._write_batch()

    async def _write_batch(self) -> bool:
        """Write one batch; True on success. A failure re-queues the batch in front."""
        queue = self._queue
        # behind (a backlog of 4 batches or more): bigger batches, less overhead per hit, to catch up
        size = self.batch_size * (BACKLOG_FACTOR if len(queue) >= BACKLOG_FACTOR * self.batch_size else 1)
        n = min(size, len(queue))
        batch = [queue.popleft() for _ in range(n)]
        try:
            result = await self._sink(batch)
        except Exception as exc:  # the database is down, locked, ...: keep the hits, try again
            self._failures += 1
            self._stats.failed_flushes += 1
            keep = []
            for hit in batch:
                hit.attempts += 1
                if hit.attempts < self.max_attempts:
                    keep.append(hit)
            given_up = len(batch) - len(keep)
            queue.extendleft(reversed(keep))
            log.warning("tracking_flush_failed", events=len(batch), attempt=self._failures, error=repr(exc)[:300])
            if given_up:
                self._stats.lost += given_up
                log.error("tracking_events_lost", events=given_up, reason="max_attempts")
            return False
        self._failures = 0
        written = getattr(result, "written", len(batch)) + getattr(result, "repeated", 0)
        self._stats.written += written
        self._stats.unknown += getattr(result, "unknown", 0)
        return True

    def _backoff(self) -> float:
        return min(self.interval * 2 ** min(self._failures, 16), self.max_backoff)

    def _warn_dropped(self, force: bool = False) -> None:
        dropped = self._stats.dropped
        if dropped == self._warned_dropped:
            return
        now = time.monotonic()
        if not force and self._warned_at is not None and now - self._warned_at < self.warn_interval:
            return
        log.warning(
            "tracking_events_dropped",
            dropped=dropped - self._warned_dropped,
            dropped_total=dropped,
            pending=len(self._queue),
            capacity=self.capacity,
        )
        self._warned_at = now
        self._warned_dropped = dropped
