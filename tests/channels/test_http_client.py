"""``HttpClient`` against a raw TCP server on 127.0.0.1 that answers each request with scripted bytes,
so every wire shape (chunked, closed-delimited, interim 1xx, cut, dropped, garbage) is exercised
exactly; and ``hand_over``'s mapping of what it raises."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from topslot.channels.http import AnswerLost, ConnectFailed, current_attempt, hand_over
from topslot.channels.http_client import HttpClient, Origin
from topslot.errors import AmbiguousSendError, TransientSendError

OK = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n" + b'{"sid":"SM1"}'

Reply = bytes | Callable[[asyncio.StreamWriter], object] | None  # None: close without answering


@dataclass
class RawServer:
    """Reads whole requests (head + Content-Length body) and answers the n-th with ``replies[n]``
    (the last one repeating); records requests and connections."""

    replies: list[Reply] = field(default_factory=lambda: [OK])
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    hold: asyncio.Event = field(default_factory=asyncio.Event)  # a reply of b"" waits for it

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
                if reply is None:
                    break
                if reply == b"":
                    await self.hold.wait()
                    break
                if callable(reply):
                    await reply(writer)  # type: ignore[misc]
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/2010-04-01/Messages.json"


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    listener = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = listener.sockets[0].getsockname()[1]
    yield raw
    raw.hold.set()
    listener.close()
    await listener.wait_closed()


HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic eDp5"}


# ---------------------------------------------------------------- requests and answers


async def test_a_post_is_plain_http_1_1_and_its_answer_is_read(server: RawServer) -> None:
    client = HttpClient(server.url, 2)

    answer = await client.post(server.url + "?a=1", b"To=%2B1&Body=hi", HEADERS)

    assert (answer.status, answer.body, answer.cut) == (201, b'{"sid":"SM1"}', False)
    assert answer.headers["content-type"] == "application/json"
    assert server.requests == [
        b"POST /2010-04-01/Messages.json?a=1 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b"User-Agent: topslot\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: Basic eDp5\r\n"
        + b"Content-Length: 15\r\n\r\nTo=%2B1&Body=hi"
    ]
    await client.close()


async def test_connections_are_kept_alive_and_never_exceed_the_limit(server: RawServer) -> None:
    client = HttpClient(server.url, 3)

    answers = await asyncio.gather(*(client.post(server.url, b"n=%d" % n, HEADERS) for n in range(30)))

    assert [a.status for a in answers] == [201] * 30 and len(server.requests) == 30
    assert server.connections <= 3 and client.open_connections <= 3
    await client.post(server.url, b"again", HEADERS)
    assert server.connections <= 3  # reused, not reopened
    await client.close()
    assert client.open_connections == 0


async def test_a_chunked_answer_and_interim_1xx_answers(server: RawServer) -> None:
    server.replies = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        OK,
    ]
    client = HttpClient(server.url, 1)

    answer = await client.post(server.url, b"x", HEADERS)
    second = await client.post(server.url, b"y", HEADERS)

    assert (answer.status, answer.body, answer.headers["x-a"]) == (200, b"hello world", "1, 2")
    assert second.status == 201 and server.connections == 1
    await client.close()


async def test_an_answer_delimited_by_the_end_of_the_connection(server: RawServer) -> None:
    async def close_after(writer: asyncio.StreamWriter) -> None:  # no length: the body ends with the connection
        writer.write(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nsomething broke")
        await writer.drain()

    server.replies = [close_after, OK]
    client = HttpClient(server.url, 1)

    answer = await client.post(server.url, b"x", HEADERS)
    again = await client.post(server.url, b"y", HEADERS)

    assert (answer.status, answer.body, answer.cut) == (500, b"something broke", False)
    assert again.status == 201 and server.connections == 2  # "Connection: close" was honoured
    await client.close()


async def test_a_long_body_is_cut_and_its_connection_closed(server: RawServer) -> None:
    server.replies = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, OK]
    client = HttpClient(server.url, 1, max_answer_bytes=10)

    answer = await client.post(server.url, b"x", HEADERS)
    await client.post(server.url, b"y", HEADERS)

    assert (answer.status, answer.body, answer.cut) == (200, b"x" * 10, True)
    assert server.connections == 2
    await client.close()


async def test_a_body_cut_by_the_peer_still_gives_the_status(server: RawServer) -> None:
    async def half(writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 50\r\n\r\n{"code": 2')
        await writer.drain()

    server.replies = [half]
    client = HttpClient(server.url, 1)

    answer = await client.post(server.url, b"x", HEADERS)

    assert (answer.status, answer.body, answer.cut) == (400, b'{"code": 2', True)
    await client.close()


# ---------------------------------------------------------------- failures and "written"


async def test_a_refused_connection_is_connect_failed_and_nothing_is_written(unused_tcp_port: int) -> None:
    client = HttpClient(f"http://127.0.0.1:{unused_tcp_port}/", 1)

    with pytest.raises(TransientSendError) as raised:
        async with hand_over("Gateway", 5) as attempt:
            await client.post(f"http://127.0.0.1:{unused_tcp_port}/", b"x", HEADERS)

    assert raised.value.code == "connect" and not attempt.written
    with pytest.raises(ConnectFailed):
        await client.post(f"http://127.0.0.1:{unused_tcp_port}/", b"x", HEADERS)
    assert client.open_connections == 0
    await client.close()


@pytest.mark.parametrize(
    "reply",
    [None, b"HTTP/1.1 200 OK\r\nContent-Le", b"this is not http\r\n\r\n"],
    ids=["dropped", "cut-in-the-head", "garbage"],
)
async def test_no_complete_answer_after_writing_is_ambiguous(server: RawServer, reply: bytes | None) -> None:
    if reply is not None:
        payload = reply

        async def once(writer: asyncio.StreamWriter) -> None:
            writer.write(payload)
            await writer.drain()

        server.replies = [once, OK]
    else:
        server.replies = [None, OK]
    client = HttpClient(server.url, 1)

    with pytest.raises(AmbiguousSendError) as raised:
        async with hand_over("Gateway", 5) as attempt:
            await client.post(server.url, b"x", HEADERS)

    assert raised.value.code == "dropped" and attempt.written
    with pytest.raises(AnswerLost):
        server.replies = [None]
        await client.post(server.url, b"y", HEADERS)
    assert client.open_connections == 0
    await client.close()


async def test_a_deadline_after_writing_is_ambiguous_and_closes_the_connection(server: RawServer) -> None:
    server.replies = [b"", OK]  # the first request is never answered
    client = HttpClient(server.url, 1)

    with pytest.raises(AmbiguousSendError) as raised:
        async with hand_over("Gateway", 0.2):
            await client.post(server.url, b"x", HEADERS)
    server.hold.set()
    answer = await client.post(server.url, b"y", HEADERS)

    assert raised.value.code == "timeout"
    assert answer.status == 201 and server.connections == 2  # a fresh connection, not the cancelled one


async def test_waiting_for_a_connection_counts_as_not_written(server: RawServer) -> None:
    server.replies = [b"", OK]  # holds the only connection
    client = HttpClient(server.url, 1)
    first = asyncio.create_task(client.post(server.url, b"x", HEADERS))
    while not server.requests:
        await asyncio.sleep(0.01)

    with pytest.raises(TransientSendError) as raised:
        async with hand_over("Gateway", 0.2) as attempt:
            await client.post(server.url, b"y", HEADERS)

    assert raised.value.code == "connect_timeout" and not attempt.written and len(server.requests) == 1
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert (await client.post(server.url, b"z", HEADERS)).status == 201  # the turn was passed on
    await client.close()


async def test_an_idle_connection_is_not_reused_after_idle_seconds(server: RawServer) -> None:
    client = HttpClient(server.url, 1, idle_seconds=0.05)

    await client.post(server.url, b"x", HEADERS)
    await asyncio.sleep(0.1)
    await client.post(server.url, b"y", HEADERS)

    assert server.connections == 2 and client.open_connections == 1
    await client.close()


async def test_the_attempt_is_marked_only_when_the_request_goes_out(server: RawServer) -> None:
    client = HttpClient(server.url, 1)
    async with hand_over("Gateway", 5) as attempt:
        assert current_attempt() is attempt and not attempt.written
        await client.post(server.url, b"x", HEADERS)
        assert attempt.written
    await client.close()


# ---------------------------------------------------------------- what is refused before sending


async def test_requests_it_will_not_send(server: RawServer) -> None:
    client = HttpClient(server.url, 1)

    for url, headers in [
        ("http://example.com/x", HEADERS),  # another origin
        (f"https://127.0.0.1:{server.port}/x", HEADERS),  # another scheme
        (server.url, {"X-Evil": "a\r\nInjected: 1"}),
        (server.url, {"Content-Length": "1"}),
        (server.url, {"Host": "elsewhere"}),
    ]:
        with pytest.raises(ValueError):
            await client.post(url, b"x", headers)
    await client.close()
    with pytest.raises(ConnectFailed):
        await client.post(server.url, b"x", HEADERS)
    assert server.requests == []


def test_the_origin_of_a_url() -> None:
    assert Origin.of("https://api.twilio.com/2010-04-01") == Origin(
        "https", "api.twilio.com", 443, "api.twilio.com", None
    )
    assert Origin.of("http://[::1]:8080/x").host_header == "[::1]:8080"
    assert Origin.of("http://u%40x:p@h/").authorization == "Basic dUB4OnA="  # base64("u@x:p")
    for bad in ("ftp://h/", "http:///x", "http://h:99999/"):
        with pytest.raises(ValueError):
            Origin.of(bad)
    with pytest.raises(ValueError):
        HttpClient("http://h/", 0)


# ---------------------------------------------------------------- https


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_with_a_verified_certificate_and_one_refused(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    raw = RawServer()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    listener = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=served)
    port = listener.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}/x"
    try:
        trusting = HttpClient(url, 1, ssl_context=ssl.create_default_context(cafile=cert))
        answer = await trusting.post(url, b"x", HEADERS)
        assert answer.status == 201 and raw.requests[0].startswith(b"POST /x HTTP/1.1\r\n")
        await trusting.close()

        default = HttpClient(url, 1)  # the system's trust store: a self-signed certificate is refused
        with pytest.raises(TransientSendError) as raised:
            async with hand_over("Gateway", 5) as attempt:
                await default.post(url, b"y", HEADERS)
        assert raised.value.code == "connect" and not attempt.written and len(raw.requests) == 1
        await default.close()
    finally:
        listener.close()
        await listener.wait_closed()
