"""A scripted SMTP server per test (see scripted_smtp.py), and a port whose connects never complete."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from .scripted_smtp import ScriptedSmtpServer


@pytest.fixture
async def smtp_server() -> AsyncIterator[ScriptedSmtpServer]:
    async with ScriptedSmtpServer() as server:
        yield server


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: a new connection's SYN is dropped, so connect() hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    yield port
    for sock in (*fillers, listener):
        sock.close()
