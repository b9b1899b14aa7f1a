"""Which event loop a topslot process runs on (``topslot.event_loop``)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from topslot import event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def test_auto_takes_uvloop_when_installed_and_asyncio_stays_asyncio() -> None:
    pytest.importorskip("uvloop")
    assert event_loop.loop_name("auto") == "uvloop"
    assert event_loop.run(_loop_module(), "auto") == "uvloop"
    assert event_loop.run(_loop_module(), "uvloop") == "uvloop"
    assert event_loop.run(_loop_module(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop.loop_name("auto") == "asyncio"
    assert event_loop.run(_loop_module(), "auto") == "asyncio"
    with pytest.raises(event_loop.EventLoopUnavailable, match="event_loop is uvloop, which is not installed"):
        event_loop.loop_name("uvloop")
