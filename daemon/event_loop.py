"""The event loop every topslot process runs on (the daemon, its dispatch helpers, the demo).

``event_loop`` in the settings: ``auto`` (the default) takes uvloop when it is installed (a
dependency on Linux and macOS: its sockets, timers and callbacks cost less CPU per message and per
tracking hit) and asyncio's own loop otherwise; ``uvloop`` insists on it (a start-up error without
it); ``asyncio`` keeps the standard loop (to rule uvloop out while chasing a problem).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from topslot.errors import TopslotError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]


class EventLoopUnavailable(TopslotError):
    """``event_loop: uvloop`` asked for a loop that is not installed."""


def loop_name(choice: LoopChoice = "auto") -> str:
    """The loop ``run`` will use for ``choice``: ``uvloop`` or ``asyncio``."""
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable("event_loop is uvloop, which is not installed (pip install uvloop)") from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T], choice: LoopChoice = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    if loop_name(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
