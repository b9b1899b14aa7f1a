"""The tracking HTTP server: open pixels, click redirects, one-click unsubscribes, labelled events.

Modules (import them directly):

- ``hits``: ``Hit`` (one observed open or click) and the cleaning of outside input (headers, client IP);
- ``classify``: pure labels ``human`` / ``machine_open`` / ``scanner`` with a reason, and open upgrades;
- ``redirect``: the click destination with ``tsid`` appended (pure);
- ``pages``: the static bodies and headers every response uses (nothing reflects the request);
- ``cache``: a small bounded LRU;
- ``buffer``: ``EventBuffer``, the bounded in-memory queue flushed in batches;
- ``ingest``: ``EventWriter``, one batch → labels → one transaction;
- ``flusher``: ``ProcessWriter``, the buffer's sink: each batch written by a process of its own (own
  engine), so the server's loop neither stalls on a flush nor shares the interpreter lock with it;
- ``server``: ``TrackingServer`` (aiohttp low-level server in the daemon's loop) and ``TrackingOptions``.
"""
