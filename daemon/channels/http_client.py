"""The HTTP/1.1 client every HTTP messenger posts with: keep-alive connections to one provider,
``httptools`` (llhttp, the parser of Node.js) reading the answers.

Why not ``aiohttp.ClientSession``: a messenger sends one small POST per message, thousands a second,
always to the same origin, and needs none of a general client's machinery (cookies, redirects,
proxies, compression, streaming, tracing, per-request timeouts). Measured on loopback against the
fake Twilio, a POST and its JSON answer cost ~300 µs of CPU through ``ClientSession`` and ~90 µs
here, the larger part of what a topslot SMS costs besides the provider itself (docs/pipeline.md).

Contract (``HttpClient``):

- ``await client.post(url, body, headers)`` sends one ``POST`` and returns its ``Answer`` (status,
  headers with lower-case names, body). ``url`` must be on the client's origin (scheme, host, port
  of the ``base_url`` it was built with). ``Host``, ``Content-Length`` and (unless given)
  ``User-Agent`` are added; nothing else is: the caller gives ``Content-Type``, ``Accept``, auth.
- At most ``connections`` connections are open; a ``post`` waits for one to be free. Connections
  are kept alive between requests (HTTP/1.1 persistent connections) and closed when the answer says
  so, after ``idle_seconds`` unused, when an answer is not read to its end, and by ``close()``.
- **Whether the request may have left is observed**: ``current_attempt().written`` (see
  ``topslot.channels.http``) is set right before the request's first byte is handed to the socket,
  never earlier. Everything that fails before that (no connection: refused, DNS, TLS, a bad URL)
  raises ``ConnectFailed``; what fails after it (the peer closed the connection, an answer that is
  not HTTP) raises ``AnswerLost``. Both are ``OSError``s defined in ``topslot.channels.http``, whose
  ``hand_over`` maps them to ``Messenger`` errors.
- No request is ever sent twice: nothing is retried here, not even on a stale keep-alive
  connection (the provider may have received it; the caller decides).
- Cancelled while waiting for its answer (``hand_over``'s deadline, a shutdown), a ``post`` closes
  its connection: the answer that may still come must not be read as the next request's.
- An answer's body is read up to ``max_answer_bytes``; beyond that it is cut there (``Answer.cut``)
  and the connection closed. ``1xx`` interim answers are skipped. A body delimited by the end of the
  connection (neither ``Content-Length`` nor chunked) is complete when the connection ends; a
  connection that ends inside a body with a length still gives the answer (its status is what the
  provider decided), ``cut``. Only an answer without a complete status line and headers is lost.

``close()`` closes the idle connections at once and the busy ones as their requests end (it does not
cut a request short: a messenger drains its own first); a ``post`` after it raises ``ConnectFailed``.
A client belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httptools

from topslot.channels.http import AnswerLost, ConnectFailed, basic_auth, current_attempt

MAX_ANSWER_BYTES = 1 << 20
"""The most of an answer's body a messenger reads (1 MiB): providers answer with small JSON."""

IDLE_SECONDS = 15.0
"""A connection unused this long is closed rather than reused (servers drop idle ones, and a request
written onto a connection the server is closing may or may not have arrived)."""

USER_AGENT = "topslot"


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: ``status``, ``headers`` (names in lower case; a repeated header's values
    joined by ", "), ``body`` (at most ``max_answer_bytes``), and ``cut`` when that is not the whole
    body (it was longer, or the connection ended inside it)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    cut: bool = False


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a client connects: ``scheme``, ``host``, ``port``, the ``Host`` header, and the
    ``Authorization`` a URL's user information asks for (``http://user:pass@host/``), if any."""

    scheme: str
    host: str
    port: int
    host_header: str
    authorization: str | None

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of ``url`` (``http`` or ``https``); ``ValueError`` for anything else."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {parts.scheme}://{parts.hostname or ''}")
        port = parts.port or (443 if scheme == "https" else 80)  # ValueError for a bad port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default = (scheme, port) in (("http", 80), ("https", 443))
        authorization = None
        if parts.username is not None:
            authorization = basic_auth(unquote(parts.username), unquote(parts.password or ""))
        return cls(scheme, host, port, shown if default else f"{shown}:{port}", authorization)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer, hands it to ``waiter``."""

    def __init__(self, max_answer_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.max_answer_bytes = max_answer_bytes
        self.waiter: asyncio.Future[Answer] | None = None
        self.lost = False
        self.reusable = False  # the last answer allows another request on this connection
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._done = False

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # nothing asked for it: the connection is not sane
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(AnswerLost(f"the answer is not HTTP/1.1: {exc}"))
            self._close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            if self._headers_done and not self._done:  # the status came: it says what happened
                self._complete(cut=not self._delimited_by_close())  # the body is whole if it ends with the connection
            else:
                self._fail(AnswerLost("the connection closed before the answer was complete"))

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self.max_answer_bytes - self._size
        if len(body) > room:
            if room > 0:
                self._body.append(body[:room])
            self._size = self.max_answer_bytes
            self._complete(cut=True)
            return
        self._body.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._reset()
            return
        self.reusable = self.parser.should_keep_alive()
        self._complete(cut=False)

    # ------------------------------------------------------------ helpers

    def _delimited_by_close(self) -> bool:
        return "content-length" not in self._headers and "transfer-encoding" not in self._headers

    def _complete(self, *, cut: bool) -> None:
        if self._done:
            return
        self._done = True
        if cut:
            self.reusable = False
            self._close()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self.parser.get_status_code(), self._headers, b"".join(self._body), cut))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def usable(self, now: float, idle_seconds: float) -> bool:
        transport = self.transport
        return (
            not self.lost
            and self.reusable
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < idle_seconds
        )


_CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})  # set by the client


class HttpClient:
    """POSTs to the origin of ``base_url`` over at most ``connections`` keep-alive connections (the
    module docstring's contract). Build it anywhere; it connects on the first ``post``."""

    def __init__(
        self,
        base_url: str,
        connections: int,
        *,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        idle_seconds: float = IDLE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if connections < 1 or max_answer_bytes < 1:
            raise ValueError("connections and max_answer_bytes must be >= 1")
        self.origin = Origin.of(base_url)
        self.connections = connections
        self.max_answer_bytes = max_answer_bytes
        self.idle_seconds = idle_seconds
        self.closed = False
        self._ssl = ssl_context
        self._idle: deque[_Connection] = deque()
        self._open = 0  # connections open or being opened
        self._waiting: deque[asyncio.Future[None]] = deque()  # posts waiting for a connection
        self._targets: dict[str, str] = {}  # url → request line and Host, for the few URLs a messenger posts to

    @property
    def open_connections(self) -> int:
        """Connections open (idle or busy) or being opened."""
        return self._open

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """One ``POST`` of ``body`` to ``url`` with ``headers``; its ``Answer``. Raises
        ``ConnectFailed`` (nothing sent), ``AnswerLost`` (sent, no complete answer), ``ValueError``
        (a URL off the origin, a header the client sets itself or with a line break: nothing sent)."""
        head = self._head(url, headers)
        connection = await self._connection()
        try:
            waiter = connection.waiter = asyncio.get_running_loop().create_future()
            transport = connection.transport
            assert transport is not None
            attempt = current_attempt()
            if attempt is not None:
                attempt.written = True
            transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
            answer = await waiter
        except BaseException:  # cancelled (a deadline), lost, not HTTP: this connection is done
            connection._close()
            self._release(connection)
            raise
        self._release(connection)
        return answer

    async def close(self) -> None:
        """Close the idle connections now and the busy ones as their requests end; later posts
        raise ``ConnectFailed``. Idempotent."""
        self.closed = True
        while self._idle:
            self._idle.popleft()._close()
            self._open -= 1
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it finds the client closed

    # ------------------------------------------------------------ requests

    def _head(self, url: str, headers: Mapping[str, str]) -> bytes:
        """The request line and headers of a ``POST`` to ``url``, up to ``Content-Length``."""
        start = self._targets.get(url)
        if start is None:
            start = self._target(url)
        names = {name.lower() for name in headers}
        if names & _CLIENT_HEADERS:
            raise ValueError(f"the client sets {', '.join(sorted(names & _CLIENT_HEADERS))} itself")
        lines = [] if "user-agent" in names else [f"User-Agent: {USER_AGENT}\r\n"]
        if self.origin.authorization is not None and "authorization" not in names:
            lines.append(f"Authorization: {self.origin.authorization}\r\n")
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        text = "".join(lines)
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):  # one CRLF per line, no more
            bad = next(name for name, value in headers.items() if {"\r", "\n"} & set(name + value))
            raise ValueError(f"a line break in the {bad} header")
        return (start + text).encode("latin-1")

    def _target(self, url: str) -> str:
        """The request line and Host header of a POST to ``url`` (checked on this origin), remembered."""
        parts = urlsplit(url)
        origin = Origin.of(url)
        if (origin.scheme, origin.host, origin.port) != (self.origin.scheme, self.origin.host, self.origin.port):
            raise ValueError("the URL is not on this client's origin")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(c in target for c in " \r\n"):
            raise ValueError("a space or line break in the URL's path")
        start = f"POST {target} HTTP/1.1\r\nHost: {self.origin.host_header}\r\n"
        if len(self._targets) >= 64:
            self._targets.clear()
        self._targets[url] = start
        return start

    # ------------------------------------------------------------ connections

    async def _connection(self) -> _Connection:
        """An idle connection that is still good, else a new one within ``connections``, else the
        next one released (first come, first served)."""
        while True:
            if self.closed:
                raise ConnectFailed("the HTTP client is closed")
            now = time.monotonic()
            while self._idle:
                connection = self._idle.pop()  # the most recently used: the likeliest to be alive
                if connection.usable(now, self.idle_seconds):
                    return connection
                connection._close()
                self._open -= 1
            if self._open < self.connections:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken and cancelled at once: pass the turn on
                else:
                    self._waiting.remove(waiter)
                raise

    async def _connect(self) -> _Connection:
        origin, loop = self.origin, asyncio.get_running_loop()
        secure = origin.scheme == "https"
        if secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self.max_answer_bytes),
                origin.host,
                origin.port,
                ssl=self._ssl if secure else None,
                server_hostname=origin.host if secure else None,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        return connection

    def _release(self, connection: _Connection) -> None:
        connection.waiter = None
        if connection.reusable and not connection.lost and not self.closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection._close()
            self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
