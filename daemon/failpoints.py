"""Failpoints, for fault tests only: ``hit(name)`` kills this process with SIGKILL at a chosen step.

Set ``TOPSLOT_FAILPOINT=name`` (the first ``hit(name)`` kills) or ``name:N`` (the N-th does), e.g.
``TOPSLOT_FAILPOINT=after_reply:3``. SIGKILL is a power cut as far as the process is concerned:
no handler, no cleanup, no flush; only what was committed survives. Never set it in production.

The variable is read once, at import. When it is unset, ``hit`` is a module-level no-op function,
so the calls left in the send path cost one call each.

Points in the send path (scheduler and dispatcher):
``after_claim``  a claim batch is committed, not yet handed to the dispatcher;
``after_render`` a chunk is rendered and marked ``sending``, nothing of it handed over yet;
``after_reply``  the chunk's sends returned (accepted or not), outcomes not yet recorded;
``after_commit`` the chunk's outcomes are committed;
``helper_start`` a dispatch helper process is starting, before it reports ready.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV = "TOPSLOT_FAILPOINT"


def parse(value: str | None) -> tuple[str, int] | None:
    """``"name"`` → (name, 1); ``"name:N"`` → (name, N); unset or blank → None."""
    if value is None or not value.strip():
        return None
    name, sep, count = value.strip().partition(":")
    nth = int(count) if sep else 1
    if not name or nth < 1:
        raise ValueError(f"{ENV} must be NAME or NAME:N with N ≥ 1, not {value!r}")
    return name, nth


def _noop(name: str) -> None:
    return None


def armed(target: str, nth: int, kill: Callable[[], None] | None = None) -> Callable[[str], None]:
    """A ``hit`` that calls ``kill`` (default: SIGKILL this process) on the ``nth`` hit of ``target``."""
    calls = 0

    def hit(name: str) -> None:
        nonlocal calls
        if name != target:
            return
        calls += 1
        if calls == nth:
            (kill or _sigkill_self)()

    return hit


def _sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


_spec = parse(os.environ.get(ENV))
hit: Callable[[str], None] = _noop if _spec is None else armed(*_spec)
