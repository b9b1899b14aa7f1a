"""Run a batch generator in a worker process, so that parsing the next batch overlaps writing this one.

Parsing (email, phone, time zone checks) is CPU-bound Python; the database write of the previous
batch mostly waits on SQLite or the network. A bounded queue keeps at most ``ahead`` batches in
flight, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

_DONE = "done"
_ERROR = "error"
_BATCH = "batch"
_POLL_SECONDS = 0.5


def _produce(out: Any, make: Callable[..., Iterator[Any]], kwargs: dict[str, Any]) -> None:
    try:
        for item in make(**kwargs):
            out.put((_BATCH, item))
        out.put((_DONE, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which re-raises
        out.put((_ERROR, f"{type(exc).__name__}: {exc}"))


class WorkerFailed(RuntimeError):
    """The parsing worker process failed or died."""


async def prefetch(make: Callable[..., Iterator[Any]], ahead: int = 2, **kwargs: Any) -> AsyncIterator[Any]:
    """Items of ``make(**kwargs)``, produced in a separate process (``make`` must be importable)."""
    ctx = mp.get_context("spawn")  # never fork a process that runs an event loop and driver threads
    out = ctx.Queue(maxsize=ahead)
    worker = ctx.Process(target=_produce, args=(out, make, kwargs), daemon=True)
    worker.start()
    loop = asyncio.get_running_loop()

    def next_item() -> tuple[str, Any]:
        while True:
            try:
                return out.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not worker.is_alive():
                    try:
                        return out.get(timeout=_POLL_SECONDS)
                    except queue.Empty:
                        return _ERROR, f"parsing worker exited with code {worker.exitcode}"

    try:
        while True:
            kind, item = await loop.run_in_executor(None, next_item)
            if kind == _DONE:
                return
            if kind == _ERROR:
                raise WorkerFailed(item)
            yield item
    finally:
        if worker.is_alive():
            worker.terminate()
        worker.join(timeout=5)
        out.close()
        out.cancel_join_thread()


PARALLEL_MIN_BYTES = 4 * 1024 * 1024  # below this, starting a worker process costs more than it saves


async def batches(make: Callable[..., Iterator[Any]], parallel: bool | None, **kwargs: Any) -> AsyncIterator[Any]:
    """``make(**kwargs)`` in a worker process for big files (or when ``parallel``), else inline."""
    if parallel is None:
        parallel = kwargs["path"].stat().st_size >= PARALLEL_MIN_BYTES
    if parallel:
        async for item in prefetch(make, **kwargs):
            yield item
        return
    for item in make(**kwargs):
        yield item
        await asyncio.sleep(0)  # let other tasks run between batches
