"""What the HTTP fakes of providers share (fake_twilio.py, fake_telegram.py, fake_im_gateway.py): a
real aiohttp server on 127.0.0.1, used as an async context manager, that answers each recipient as
scripted and records what it received.

A fake is a dataclass built on ``FakeHttpServer``. It adds its routes in ``_routes``; its handler for
the provider's API runs inside ``with self._handling():`` (counted in ``in_flight`` /
``peak_in_flight``), appends what it saw to ``requests`` and returns ``self._reply(request, seen,
response)`` (a ``None`` response drops the connection without an answer). ``behaviour(recipient)``
is the next scripted behaviour for a recipient (``script``: one behaviour, or a list used one request
after another, the last one repeating; else ``default``); ``await self._wait(seconds)`` is a slow
answer's wait, cut short when the fake closes. ``_client()`` is the session the fake posts its
webhooks with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from aiohttp import web


@dataclass
class FakeHttpServer:
    script: dict[str, Any] = field(default_factory=dict)  # recipient → a behaviour or a list of them
    default: Any = None  # the behaviour for everybody else (each fake gives its ACCEPT)
    host: str = "127.0.0.1"

    requests: list[Any] = field(default_factory=list, init=False)  # every request received, in order
    in_flight: int = field(default=0, init=False)
    peak_in_flight: int = field(default=0, init=False)
    port: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._seen: dict[str, int] = {}  # requests per recipient so far (for scripted sequences)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The base URL to give the client (the provider's ``base_url``)."""
        return f"http://{self.host}:{self.port}"

    def _routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self._routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # slow answers end now
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _client(self) -> aiohttp.ClientSession:
        assert self._session is not None, f"use {type(self).__name__} as an async context manager"
        return self._session

    # ------------------------------------------------------------ answering

    def behaviour(self, recipient: str) -> Any:
        """The next behaviour for a request to ``recipient`` (advances a scripted sequence)."""
        scripted = self.script.get(recipient, self.default)
        n = self._seen.get(recipient, 0)
        self._seen[recipient] = n + 1
        if not isinstance(scripted, list | tuple):
            return scripted
        return scripted[min(n, len(scripted) - 1)] if scripted else self.default

    @contextmanager
    def _handling(self) -> Iterator[None]:
        """One request of the provider's API being handled: counted in ``in_flight``."""
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1

    async def _wait(self, seconds: float) -> None:
        """A slow answer's wait: ``seconds``, or until the fake closes."""
        if seconds:
            try:
                await asyncio.wait_for(self._closing.wait(), seconds)
            except TimeoutError:
                pass

    @staticmethod
    def _reply(request: web.Request, seen: Any, response: web.Response | None) -> web.StreamResponse:
        """``response``, noted as ``seen.answered``; ``None``: drop the connection without answering."""
        if response is None:  # dropped: close, then aiohttp finds nothing to write the answer to
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        seen.answered = response.status
        return response
