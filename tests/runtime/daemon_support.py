"""What the in-process daemon tests share: a queryable log stream, a polling wait, a daemon factory."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from topslot.runtime import Daemon
from topslot.settings import load_settings

WAIT = 15.0  # generous: file events on a loaded CI machine


class LogTap(io.StringIO):
    """The daemon's JSON log stream, queryable."""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in self.getvalue().splitlines() if line.startswith("{")]
        return [e for e in entries if name is None or e["event"] == name]


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def make_daemon(workdir: Path, logs: LogTap, **kwargs: Any) -> Daemon:
    settings = load_settings(workdir / "config")
    return Daemon(settings, log_stream=logs, watch_debounce_ms=100, **kwargs)
