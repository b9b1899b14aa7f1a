"""The tracking HTTP server, in the daemon's event loop (aiohttp's low-level server, six routes).
Opens and clicks are buffered and written in batches by a process of its own (``flusher``).

=====================  =====================================================================
``GET|HEAD /o/T.gif``  1×1 GIF, no-cache; the open goes to the event buffer
``GET|HEAD /c/T``      302 to the stored destination with ``tsid=T``; the click goes to the buffer
``GET|HEAD /s/CODE``   an SMS short link: the same click as ``/c/`` (same checks, event and 302); its
                       ``tsid`` is the equivalent click token, so ``POST /conversions`` verifies it
``GET|HEAD /u/T``      a static page with a POST button; changes nothing (scanners follow GETs)
``POST /u/T``          RFC 8058 one-click unsubscribe (body ``List-Unsubscribe=One-Click``, also
                       what the page's form posts): committed before the 200, idempotent
``GET /healthz``       liveness (the loop answers). JSON: ``status`` (``ok``, or ``degraded``
                       with since when, where and why while the database refuses work), counters:
                       events accepted / written / dropped / lost, rejected tokens. Always 200
``GET /readyz``        readiness. JSON ``{status, checks}``: 200 ``ready`` when every check says
                       ``ok`` (the database answers ``SELECT 1`` within ``ready_timeout``, and
                       what ``ready_checks`` holds: the daemon adds campaigns loaded, scheduler
                       running), else 503 ``not_ready`` with what each failing check found
``GET /metrics``       Prometheus text format (``topslot.metrics``); the database gauges come from
                       a snapshot refreshed in the background, so a scrape never waits for it
=====================  =====================================================================

With ``metrics_port`` set, ``/metrics``, ``/healthz`` and ``/readyz`` are also served on a listener of
their own (``metrics_host:metrics_port``, every other path a 404 there), and ``/metrics`` is no
longer served on the tracking port, which faces recipients and the internet.

Routes are served at the root and under the path of ``tracking_base_url`` (a reverse proxy may
or may not strip it). Any token that does not verify (unknown, forged, altered, retired key, wrong
route) gets the same static 404 page: never a redirect. A token for delivery id 0 (``TEST_DELIVERY_ID``)
is a proof's (``topslot send-test``): its click is redirected by the link key alone, its open and
unsubscribe are answered, and nothing of it is recorded. The destination of a click comes only
from the ``links`` table, so no request can choose where the redirect goes.

Every response carries the security headers of ``topslot.tracking.pages`` and no cookie. Nothing
from the request is echoed: even aiohttp's own parser errors (an oversized or malformed header)
are answered with a static page. User-Agent, Referer and the client IP (``X-Forwarded-For`` only
from ``TrackingOptions.trusted_proxies``) are cleaned and stored as data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot import metrics
from topslot.clock import Clock
from topslot.errors import TopslotError
from topslot.health import Health
from topslot.links.keys import Keyring
from topslot.links.tokens import TEST_DELIVERY_ID, TokenClaims, TokenError
from topslot.links.tracking import TrackingBase, click_id, read_tracking_path
from topslot.logs import get_logger
from topslot.store.ledger import metrics_snapshot
from topslot.store.links import StoredLink, find_link, find_link_by_key
from topslot.store.tracking_events import unsubscribe
from topslot.tracking import pages
from topslot.tracking.buffer import BufferStats, EventBuffer
from topslot.tracking.cache import LruCache
from topslot.tracking.classify import DEFAULT_RULES, Rules
from topslot.tracking.directory import CampaignDirectory
from topslot.tracking.flusher import ProcessWriter
from topslot.tracking.hits import Hit, Network, clean_header, client_ip, parse_networks
from topslot.tracking.redirect import UnsafeDestination, with_click_id

log = get_logger("topslot.tracking")

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
_ROUTES = {"/o/": "open", "/c/": "click", "/s/": "click", "/u/": "unsubscribe"}
Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]
_READ_METHODS = ("GET", "HEAD")
_BASE_HEADERS = {**pages.SECURITY_HEADERS, **pages.NO_CACHE}
_OWN = ("/healthz", "/readyz", "/metrics")
ReadyCheck = Callable[[], str | None]  # None when ready, else what is wrong


class TrackingServerError(TopslotError):
    """The tracking server cannot start (address in use, bad options)."""


@dataclass(frozen=True, slots=True)
class TrackingOptions:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (tests); the bound port is ``TrackingServer.port``
    base_path: str = ""  # the path of tracking_base_url, e.g. "/t"
    trusted_proxies: tuple[Network, ...] = ()
    buffer_capacity: int = 100_000
    batch_size: int = 500  # hits per transaction (written by the writer's process, not this loop)
    flush_interval: float = 0.2
    warn_interval: float = 10.0
    rules: Rules = field(default_factory=lambda: DEFAULT_RULES)
    max_header_bytes: int = 128 * 1024  # one header field; a 100 KB User-Agent is read, stored cut
    max_body_bytes: int = 4096  # POST /u bodies
    delivery_cache: int = 200_000  # delivery → campaign entries (~100 bytes each)
    link_cache: int = 20_000
    token_cache: int = 20_000  # verified tracking paths (opens repeat: proxies, re-reads), ~300 bytes each
    keepalive_timeout: float = 15.0
    metrics: bool = True  # serve /metrics (and refresh its database snapshot)
    metrics_interval: float = 5.0  # seconds between database snapshots of the ledger and coupon gauges
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # a listener of its own for /metrics, /healthz, /readyz (0: any free port)
    ready_timeout: float = 1.0  # /readyz: seconds the database has to answer

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> TrackingOptions:
        """From process settings: bind address, base path; trusted proxies from
        ``tracking_trusted_proxies`` when the settings have it (list of IPs / CIDR networks)."""
        base = TrackingBase.parse(settings.tracking_base_url)
        values: dict[str, Any] = {
            "host": settings.tracking_host,
            "port": settings.tracking_port,
            "base_path": urlsplit(base.url).path.rstrip("/"),
            "trusted_proxies": parse_networks(getattr(settings, "tracking_trusted_proxies", None) or ()),
            "metrics_host": getattr(settings, "metrics_host", "127.0.0.1"),
            "metrics_port": getattr(settings, "metrics_port", None),
        }
        values.update(overrides)
        return cls(**values)


class TrackingServer:
    """``await start()`` binds and starts flushing; ``await close()`` stops serving, then flushes."""

    def __init__(
        self,
        engine: AsyncEngine,
        keyring: Keyring,
        clock: Clock,
        options: TrackingOptions | None = None,
        *,
        health: Health | None = None,
    ):
        self.engine = engine
        self.health = health or Health()
        self.keyring = keyring
        self.clock = clock
        self.options = options = options or TrackingOptions()
        self.writer = ProcessWriter(engine, options.rules)  # batches are written by a process of its own
        self.buffer = EventBuffer(
            self.writer,
            capacity=options.buffer_capacity,
            batch_size=options.batch_size,
            interval=options.flush_interval,
            warn_interval=options.warn_interval,
        )
        self.rejected = 0  # requests with a token that did not verify
        self.port: int | None = None
        self._prefix = options.base_path.rstrip("/")
        self._trusted = options.trusted_proxies
        self.campaigns = CampaignDirectory(engine, maxsize=options.delivery_cache)
        self._links: LruCache[tuple[str, str], StoredLink] = LruCache(options.link_cache)
        # path → (claims, click token): only paths that verified, for the keyring they verified with
        self._verified: LruCache[str, tuple[TokenClaims, str]] = LruCache(options.token_cache)
        self._verified_with = keyring
        self._runner: web.ServerRunner | None = None
        self._ops_runner: web.ServerRunner | None = None
        self.metrics_port: int | None = None  # the bound port of the metrics listener, when there is one
        self._extra: dict[str, tuple[tuple[str, ...], Handler]] = {}
        self.ready_checks: dict[str, ReadyCheck] = {}  # /readyz beside the database ping (the daemon's)
        self.snapshot = (
            metrics.DatabaseSnapshot(
                partial(metrics_snapshot, engine, [str(s) for s in metrics.BACKLOG_STATES]),
                interval=options.metrics_interval,
            )
            if options.metrics
            else None
        )

    def add_route(self, path: str, handler: Handler, methods: tuple[str, ...] = ("POST",)) -> None:
        """Serve another exact path (e.g. ``/conversions``) beside the tracking routes. ``handler``
        gets aiohttp's ``BaseRequest`` and returns a response; add ``pages.SECURITY_HEADERS`` and
        never echo the request. Other methods get the static 405 page."""
        if not path.startswith("/") or path[:3] in _ROUTES or path in _OWN:
            raise ValueError(f"cannot add a route at {path!r}")
        self._extra[path] = (tuple(m.upper() for m in methods), handler)

    @property
    def url(self) -> str:
        """Where this server answers (its real port), e.g. ``http://127.0.0.1:41234``."""
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def stats(self) -> BufferStats:
        return self.buffer.stats

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        o = self.options
        self._runner, self.port = await self._listen(self.handle, o.host, o.port, "tracking_host / tracking_port")
        if o.metrics_port is not None:
            try:
                self._ops_runner, self.metrics_port = await self._listen(
                    self._handle_ops, o.metrics_host, o.metrics_port, "metrics_host / metrics_port"
                )
            except TrackingServerError:
                runner, self._runner = self._runner, None
                await runner.cleanup()
                raise
            log.info("metrics_listener_started", host=o.metrics_host, port=self.metrics_port)
        self.writer.start()
        self.buffer.start()
        if self.snapshot is not None:
            self.snapshot.start()
        log.info("tracking_server_started", host=o.host, port=self.port, base_path=self._prefix or "/")

    async def _listen(self, handler: Handler, host: str, port: int, settings: str) -> tuple[web.ServerRunner, int]:
        """A started listener on ``host:port`` answering with ``handler``, and its bound port."""
        o = self.options
        server = _Server(
            handler,
            client_max_size=o.max_body_bytes,
            access_log=None,
            max_field_size=o.max_header_bytes,
            keepalive_timeout=o.keepalive_timeout,
        )
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise TrackingServerError(
                f"tracking server cannot listen on {host}:{port}: {exc.strerror or exc} (set {settings})"
            ) from None
        sockets = getattr(site._server, "sockets", None) or []  # the bound port when 0 was asked
        return runner, sockets[0].getsockname()[1] if sockets else port

    @property
    def metrics_url(self) -> str:
        """Where ``/metrics`` is scraped: the metrics listener when there is one, else the tracking port."""
        if self.metrics_port is None:
            return self.url + "/metrics"
        host = self.options.metrics_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.metrics_port}/metrics"

    async def close(self) -> None:
        if self._ops_runner is not None:
            ops, self._ops_runner = self._ops_runner, None
            await ops.cleanup()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()  # stop accepting, finish requests in flight
        if self.snapshot is not None:
            await self.snapshot.close()
        await self.buffer.close()
        await self.writer.close()
        log.info("tracking_server_stopped", rejected_tokens=self.rejected, **self.buffer.stats.as_dict())

    async def __aenter__(self) -> TrackingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- requests

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        try:
            return await self._route(request)
        except web.HTTPException as exc:  # e.g. a POST body above client_max_size
            return _page(exc.status)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("tracking_database_unavailable", error=type(exc).__name__)
            return _page(503)
        except Exception:
            log.exception("tracking_request_failed")
            return _page(500)

    async def _handle_ops(self, request: BaseRequest) -> web.StreamResponse:
        """The metrics listener: ``/metrics``, ``/healthz``, ``/readyz``; anything else a 404."""
        path = request.raw_path.partition("?")[0]
        try:
            return await self._own(request, path) if path in _OWN else _page(404)
        except Exception:
            log.exception("tracking_request_failed")
            return _page(500)

    async def _own(self, request: BaseRequest, path: str) -> web.StreamResponse:
        if request.method not in _READ_METHODS:
            return _page(405, allow="GET, HEAD")
        if path == "/healthz":
            return self._health()
        if path == "/readyz":
            return await self._ready()
        return self._metrics()

    async def _route(self, request: BaseRequest) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0]
        prefix = self._prefix
        if prefix and path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] == "/":
            path = path[len(prefix) :]
        if path in _OWN and not (path == "/metrics" and self.options.metrics_port is not None):
            return await self._own(request, path)
        if path[:3] not in _ROUTES:
            extra = self._extra.get(path)
            if extra is None:
                return _page(404)
            methods, handler = extra
            if request.method not in methods:
                return _page(405, allow=", ".join(methods))
            return await handler(request)
        claims, token = self._verify(path)
        if claims is None:
            self.rejected += 1
            return _page(404)
        if claims.kind == "open":
            return await self._open(request, claims)
        if claims.kind == "click":
            return await self._click(request, claims, token)
        return await self._unsubscribe(request, claims)

    def _verify(self, path: str) -> tuple[TokenClaims | None, str]:
        """The claims of a tracking path (None: it does not verify) and, for a click, its ``tsid``
        token. Verified paths are remembered (``token_cache``; forgotten if the keyring changes): a
        repeat costs a lookup instead of an HMAC, a decode and, for ``/s/``, a signature."""
        keyring = self.keyring
        if keyring is not self._verified_with:
            self._verified = LruCache(self.options.token_cache)
            self._verified_with = keyring
        found = self._verified.get(path)
        if found is not None:
            return found
        try:
            claims = read_tracking_path(path, keyring)
        except TokenError:
            return None, ""
        token = click_id(path, claims, keyring) if claims.kind == "click" else ""
        self._verified.put(path, (claims, token))
        return claims, token

    async def _open(self, request: BaseRequest, claims: TokenClaims) -> web.StreamResponse:
        if request.method not in _READ_METHODS:
            return _page(405, allow="GET, HEAD")
        if claims.delivery_id != TEST_DELIVERY_ID:  # a proof's open: answered, never recorded
            await self._record(self._hit(request, "open", claims.delivery_id))
        return web.Response(body=pages.PIXEL_GIF, headers=_PIXEL_HEADERS)

    async def _click(self, request: BaseRequest, claims: TokenClaims, token: str) -> web.StreamResponse:
        """A verified click (``/c/`` token or ``/s/`` short code): ``token`` is the ``tsid`` to append."""
        if request.method not in _READ_METHODS:
            return _page(405, allow="GET, HEAD")
        delivery_id = claims.delivery_id
        if delivery_id == TEST_DELIVERY_ID:
            return await self._test_click(claims, token)
        campaign_id = await self.campaigns.campaign_of(delivery_id)
        if campaign_id is None:
            return _page(404)
        key = (campaign_id, claims.link_key or "")
        link = self._links.get(key)
        if link is None:
            link = await find_link(self.engine, *key)
            if link is None:
                return _page(404)
            self._links.put(key, link)
        try:
            location = with_click_id(link.url, token)
        except UnsafeDestination:
            log.warning("tracking_unsafe_destination", campaign_id=campaign_id, link_id=link.id)
            return _page(404)
        await self._record(self._hit(request, "click", delivery_id, campaign_id=campaign_id, link_id=link.id))
        return web.Response(status=302, headers={**_BASE_HEADERS, "Location": location})

    async def _test_click(self, claims: TokenClaims, token: str) -> web.StreamResponse:
        """A click on a proof's link (``topslot send-test``): redirected like any click, recorded nowhere."""
        link = await find_link_by_key(self.engine, claims.link_key or "")
        if link is None:
            return _page(404)
        try:
            location = with_click_id(link.url, token)
        except UnsafeDestination:
            return _page(404)
        return web.Response(status=302, headers={**_BASE_HEADERS, "Location": location})

    async def _record(self, hit: Hit) -> None:
        """Queue the hit; if the writer is behind, hold the answer back a little (see ``EventBuffer``)."""
        self.buffer.add(hit)
        pause = self.buffer.pace()
        if pause:
            await asyncio.sleep(pause)

    async def _unsubscribe(self, request: BaseRequest, claims: TokenClaims) -> web.StreamResponse:
        if request.method in _READ_METHODS:
            return _html(200, pages.CONFIRM_UNSUBSCRIBE)
        if request.method != "POST":
            return _page(405, allow="GET, HEAD, POST")
        length = request.content_length
        if length is not None and length > self.options.max_body_bytes:
            return _page(413)
        form = await request.post()  # urlencoded or multipart; 413 beyond client_max_size
        if form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
            return _page(400)
        if claims.delivery_id == TEST_DELIVERY_ID:  # a proof's unsubscribe link: nobody to unsubscribe
            return _html(200, pages.UNSUBSCRIBED)
        headers = request.headers
        done = await unsubscribe(
            self.engine,
            claims.delivery_id,
            self.clock.now(),
            method="POST",
            user_agent=clean_header(headers.get("User-Agent")),
            referer=clean_header(headers.get("Referer")),
            ip=self._client_ip(request),
        )
        if done is None:
            return _page(404)
        log.info(
            "tracking_unsubscribed",
            delivery_id=claims.delivery_id,
            campaign_id=done.campaign_id,
            channel=done.channel,
            first=done.first,
            suppressed=done.suppressed,
        )
        return _html(200, pages.UNSUBSCRIBED)

    def _health(self) -> web.StreamResponse:
        body = {**self.health.as_dict(), "events": self.buffer.stats.as_dict(), "rejected_tokens": self.rejected}
        return web.Response(
            body=json.dumps(body, sort_keys=True).encode("ascii"),
            headers={**_BASE_HEADERS, "Content-Type": "application/json"},
        )

    async def _ready(self) -> web.StreamResponse:
        checks: dict[str, str] = {"database": await self._ping()}
        for name, check in self.ready_checks.items():
            try:
                problem = check()
            except Exception as exc:
                problem = f"the check failed: {type(exc).__name__}"
            checks[name] = "ok" if problem is None else problem
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return web.Response(
            status=200 if ready else 503,
            body=json.dumps(body, sort_keys=True).encode("ascii"),
            headers={**_BASE_HEADERS, "Content-Type": "application/json"},
        )

    async def _ping(self) -> str:
        """``ok`` when the database answers ``SELECT 1`` within ``ready_timeout``, else why not."""
        timeout = self.options.ready_timeout
        try:
            async with asyncio.timeout(timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except TimeoutError:
            return f"unreachable: no answer within {timeout:g} s"
        except Exception as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200] if str(exc) else ""
            return f"unreachable: {type(exc).__name__}" + (f": {detail}" if detail else "")
        return "ok"

    def _metrics(self) -> web.StreamResponse:
        if self.snapshot is None:
            return _page(404)
        return web.Response(
            body=metrics.exposition(self.snapshot),
            headers={**_BASE_HEADERS, "Content-Type": metrics.CONTENT_TYPE},
        )

    def _hit(
        self,
        request: BaseRequest,
        kind: str,
        delivery_id: int,
        *,
        campaign_id: str | None = None,
        link_id: int | None = None,
    ) -> Hit:
        headers = request.headers
        return Hit(
            kind=kind,
            delivery_id=delivery_id,
            occurred_at=self.clock.now(),
            method=request.method,
            user_agent=clean_header(headers.get("User-Agent")),
            referer=clean_header(headers.get("Referer")),
            ip=self._client_ip(request),
            campaign_id=campaign_id,
            link_id=link_id,
        )

    def _client_ip(self, request: BaseRequest) -> str | None:
        forwarded = request.headers.get("X-Forwarded-For") if self._trusted else None
        return client_ip(request.remote, forwarded, self._trusted)


_PIXEL_HEADERS = {**_BASE_HEADERS, "Content-Type": "image/gif"}


def _html(status: int, body: bytes, extra: Mapping[str, str] | None = None) -> web.Response:
    headers = {**_BASE_HEADERS, "Content-Type": pages.HTML}
    if extra:
        headers.update(extra)
    return web.Response(status=status, body=body, headers=headers)


def _page(status: int, *, allow: str | None = None) -> web.Response:
    return _html(status, pages.page_for(status), {"Allow": allow} if allow else None)


# ---------------------------------------------------------------- aiohttp plumbing


class _Handler(RequestHandler):
    """aiohttp's connection handler, except that its own errors (malformed or oversized requests)
    get a static page: aiohttp's default error text quotes the offending input."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("tracking_request_failed", status=status, error=type(exc).__name__ if exc else None)
        else:
            log.debug("tracking_bad_request", status=status, error=type(exc).__name__ if exc else None)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error page")
        response = _page(status if status in pages.STATUS_PAGES else 500 if status >= 500 else 400)
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, handler: Any, *, client_max_size: int, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._client_max_size = client_max_size

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)

    def _make_request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> BaseRequest:
        return BaseRequest(message, payload, protocol, writer, task, self._loop, client_max_size=self._client_max_size)


async def serve(engine: AsyncEngine, keyring: Keyring, clock: Clock, options: TrackingOptions) -> None:
    """Run a tracking server until cancelled (a standalone tracking node; the daemon embeds one)."""
    async with TrackingServer(engine, keyring, clock, options):
        await asyncio.Event().wait()
