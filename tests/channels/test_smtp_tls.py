"""SmtpPool against aiosmtpd (an independent SMTP implementation, in its own thread): STARTTLS,
implicit TLS, AUTH, certificate checks, and connection reuse."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from topslot.channels.smtp import SmtpPool
from topslot.errors import TransientSendError

from .scripted_smtp import unused_port
from .support import envelope, server_config

USER, PASSWORD = "topslot", "s3cret-pass"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []
        self.sessions: set[Any] = set()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions.add(session.peer)
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content, session.authenticated))
        return f"250 2.0.0 Ok: queued as A{len(self.messages)}"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535 itself


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Controller, Recorder]]:
    recorder = Recorder()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=unused_port(),
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    yield controller, recorder
    controller.stop()


async def test_starttls_and_auth(starttls_server: tuple[Controller, Recorder], certificate: tuple[Path, Path]) -> None:
    controller, recorder = starttls_server
    pool = SmtpPool(
        {"main": server_config(controller.port, tls="starttls", username=USER, password=PASSWORD)},
        tls_context=client_context(certificate),
    )
    message = envelope("someone@a.example")
    assert await pool.send(message) == "A1"
    await pool.close()
    [(mail_from, rcpts, data, authenticated)] = recorder.messages
    assert (mail_from, rcpts, data, authenticated) == ("news@shop.example", ["someone@a.example"], message.data, True)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    recorder = Recorder()
    port = unused_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        ssl_context=server_context(certificate),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,  # aiosmtpd 1.4 only counts STARTTLS as TLS; this session is TLS throughout
    )
    await asyncio.to_thread(controller.start)
    try:
        pool = SmtpPool(
            {"main": server_config(port, tls="tls", username=USER, password=PASSWORD)},
            tls_context=client_context(certificate),
        )
        assert await pool.send(envelope("someone@a.example")) == "A1"
        await pool.close()
    finally:
        await asyncio.to_thread(controller.stop)
    assert recorder.messages[0][3] is True


async def test_wrong_password_marks_the_server_down_and_never_shows_the_password(
    starttls_server: tuple[Controller, Recorder], certificate: tuple[Path, Path]
) -> None:
    controller, recorder = starttls_server
    wrong = "wrong-password-123"
    pool = SmtpPool(
        {"main": server_config(controller.port, tls="starttls", username=USER, password=wrong)},
        tls_context=client_context(certificate),
    )
    with pytest.raises(TransientSendError) as caught:
        await pool.send(envelope("someone@a.example"))
    await pool.close()
    assert caught.value.code == 535
    assert wrong not in str(caught.value)
    assert not pool.status()[0].up and recorder.messages == []


async def test_an_untrusted_certificate_is_refused(starttls_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = starttls_server
    pool = SmtpPool({"main": server_config(controller.port, tls="starttls", username=USER, password=PASSWORD)})
    with pytest.raises(TransientSendError) as caught:
        await pool.send(envelope("someone@a.example"))
    await pool.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert recorder.messages == []


async def test_connections_are_reused_against_aiosmtpd() -> None:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=unused_port())
    controller.start()
    try:
        pool = SmtpPool({"main": server_config(controller.port, pool_size=2)})
        ids = await asyncio.gather(*(pool.send(envelope(f"user{i}@d{i % 3}.example")) for i in range(40)))
        await pool.close()
    finally:
        controller.stop()
    assert sorted(ids) == sorted(f"A{i}" for i in range(1, 41))
    assert len(recorder.messages) == 40 and len(recorder.sessions) <= 2
