"""The forkserver topslot's child processes are forked from (the campaign loader, the tracking writer).

A process that runs an event loop, driver threads and open connections must not ``fork``; ``spawn``
re-imports everything in each child (~0.6 s). A forkserver is a clean process started once, with
the children's modules already imported (``PRELOAD``): each child is forked from it in
milliseconds and inherits nothing of the daemon.
"""

from __future__ import annotations

import multiprocessing

PRELOAD = ["topslot.runtime.campaign_loader", "topslot.tracking.flusher"]

_CONTEXT: multiprocessing.context.ForkServerContext | None = None


def context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context (its server starts with the first child, importing ``PRELOAD``)."""
    global _CONTEXT
    if _CONTEXT is None:
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(PRELOAD)
        _CONTEXT = forkserver
    return _CONTEXT
