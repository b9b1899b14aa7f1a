"""Where a dispatching process's time goes, per claim batch: ``send_pipeline.py --phases``.

``install()`` wraps, in this process only, the store calls of a batch (claim, recipients, eligibility,
coupons, links, marking, outcomes), the dispatcher's rendering of a chunk and its whole ``dispatch``,
each timed on the wall clock (an ``await`` includes waiting for the event loop's other work), and
notes the event loop thread's CPU from the first batch to the last. ``Phases.summary()`` gives the
median milliseconds of each step a batch and how busy the loop's thread was: the figures to start
from before changing the dispatch (dispatch helper processes are not covered: use ``--processes 1``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

# (module, owner or None for module functions, name, label), in a batch's order
STEPS = [
    ("topslot.store.controls", None, "campaign_state", "pause check"),
    ("topslot.store.ledger", None, "claim_batch", "claim"),
    ("topslot.store.dispatch", None, "load_recipients", "recipients"),
    ("topslot.store.dispatch", None, "drop_ineligible", "eligibility"),
    ("topslot.store.dispatch", None, "reserve_coupons", "coupons"),
    ("topslot.dispatch.dispatcher", "Dispatcher", "_prepare", "render"),
    ("topslot.store.links", None, "save_links", "links"),
    ("topslot.store.dispatch", None, "mark_sending", "marking"),
    ("topslot.store.dispatch", None, "record_outcomes", "outcomes"),
    ("topslot.dispatch.dispatcher", "Dispatcher", "dispatch", "batch"),
]


class Phases:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.first: tuple[float, float] | None = None  # (wall, loop thread CPU) as the first batch starts
        self.last: tuple[float, float] | None = None  # ... as the last one ends

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        batch = label == "batch"

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            if batch and self.first is None:
                self.first = (started, time.thread_time())
            try:
                return await fn(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                self.times[label].append(ended - started)
                if batch:
                    self.last = (ended, time.thread_time())

        @functools.wraps(fn)
        def plain(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times[label].append(time.perf_counter() - started)

        return wrapper if inspect.iscoroutinefunction(fn) else plain

    def summary(self) -> dict[str, Any]:
        """Median ms a batch of each step (and how many times it ran), the loop thread's busy share."""
        steps = {label: [round(statistics.median(v) * 1000, 2), len(v)] for label, v in self.times.items()}
        busy = None
        if self.first and self.last and self.last[0] > self.first[0]:
            busy = round((self.last[1] - self.first[1]) / (self.last[0] - self.first[0]), 3)
        return {"steps": steps, "loop_busy": busy}


def install() -> Phases:
    """Time every step of ``STEPS`` in this process from now on."""
    phases = Phases()
    for module_name, owner, name, label in STEPS:
        module = importlib.import_module(module_name)
        holder = getattr(module, owner) if owner else module
        setattr(holder, name, phases.timed(label, getattr(holder, name)))
    return phases


def lines(summary: dict[str, Any]) -> list[str]:
    """``summary`` as lines to print, in a batch's order."""
    steps = summary["steps"]
    parts = [f"{label} {steps[label][0]:g}" for _, _, _, label in STEPS if label in steps and label != "batch"]
    out = [f"per batch, median ms: {', '.join(parts)}"]
    if "batch" in steps:
        out.append(f"a batch {steps['batch'][0]:g} ms ({steps['batch'][1]} batches)")
    if summary["loop_busy"] is not None:
        out.append(f"event loop thread busy {summary['loop_busy']:.0%} of the time from the first batch to the last")
    return out
