"""Helpers for transport tests: envelopes, server settings, fake monotonic clocks (``MonotonicFake``;
``FrozenTime``, with a sleep that records instead of waiting), worker processes (``run_workers``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from topslot.channels.base import EmailEnvelope
from topslot.settings import SmtpServer

_ids = itertools.count(1)


def envelope(rcpt: str, *, body: bytes | None = None, mail_from: str = "news@shop.example") -> EmailEnvelope:
    delivery_id = next(_ids)
    data = (
        body
        if body is not None
        else (
            f"From: Shop <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: Offer {delivery_id}\r\n"
            f"Message-ID: <{delivery_id}@shop.example>\r\n\r\nHello {delivery_id}\r\n"
        ).encode()
    )
    return EmailEnvelope(delivery_id=delivery_id, mail_from=mail_from, rcpt_to=rcpt, data=data)


def server_config(port: int, **overrides: object) -> SmtpServer:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "pool_size": 4,
        "rate_per_second": 100_000.0,
        "max_per_domain": 100,
    }
    values.update(overrides)
    return SmtpServer(**values)  # type: ignore[arg-type]


class MonotonicFake:
    """A monotonic clock for backoff and idle-time tests; moves only when told."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FrozenTime:
    """A monotonic clock that only moves when told, and a sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


async def run_workers(script: Path, jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """``python script '<job as JSON>'`` for every job at once (separate processes); each one's
    last line of output, parsed as JSON, in the order of ``jobs``. Every one must exit 0."""
    pipe = asyncio.subprocess.PIPE
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, str(script), json.dumps(job), stdout=pipe) for job in jobs
    ]
    async with asyncio.timeout(timeout):
        outputs = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(jobs)
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
