"""The tracking HTTP server: open pixels, click redirects, one-click unsubscribes, labelled events.

Modules (import them directly):

- ``hits``: ``Hit`` (one observed open or click) and the cleaning of outside input (headers, client IP);
- ``classify``: pure labels ``human`` / ``machine_open`` / ``scanner`` with a reason, and open upgrades;
- ``redirect``: the click destination with ``tsid`` appended (pure);
- ``pages``: the static bodies and headers every response uses (nothing reflects the request);
- ``cache``: a small bounded LRU;
- ``buffer``: ``EventBuffer``, the bounded in-memory queue flushed in batches;
- ``ingest``: ``EventWriter``, one batch → labels → one transaction;
- ``flusher``: ``ThreadedWriter``, the buffer's sink: each batch written on a thread of its own (own
  event loop and engine), so the server's loop never stalls on a flush;
- ``server``: ``TrackingServer`` (aiohttp low-level server in the daemon's loop) and ``TrackingOptions``.
"""
