"""The process's heap, settled once it has started (``settle_heap``).

A daemon process builds ~130,000 objects that live as long as it does (modules, settings, compiled
campaigns, SQLAlchemy metadata, the metrics registry). Left in the cyclic garbage collector's
generations, every full collection walks them all again: 100-235 ms of a stalled event loop, a few
times per bucket and every few seconds under tracking load (measured: docs/pipeline.md,
docs/tracking.md). ``settle_heap`` collects the start-up's garbage, then freezes what is left
(``gc.freeze``): later collections walk only what came after. Reference counting still frees frozen
objects; only cycles among them are never collected, and start-up leaves none that matter.

Called by the processes themselves, once they have started: the daemon (``topslot.runtime``) and
each dispatch helper (``topslot.dispatch.workers``); never by a library class, so tests and tools
that build servers and services keep the collector as it is.
"""

from __future__ import annotations

import gc

_settled = False


def settle_heap() -> None:
    """Collect, then freeze the objects alive now; only the first call in a process does anything."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
