"""Shared fixtures: a throw-away config dir with one valid campaign, and a real notify socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from runtime.daemon_support import LogTap

CAMPAIGN = """\
id: {id}
name: {name}
channels: [email]
audience:
  all:
    - {{attribute: gender, equals: female}}
schedule:
  start: 2027-05-06
  end: 2027-05-09
  slots: ["07:30"]
  fallback_timezone: Asia/Shanghai
landing_page:
  url: https://shop.example.com/offer
content:
  email:
    from: "Example Shop <news@shop.example.com>"
    subject: "A small gift"
    html: offer/email.html.j2
"""


def campaign_yaml(campaign_id: str, name: str = "Spring offer") -> str:
    return CAMPAIGN.format(id=campaign_id, name=name)


@pytest.fixture
def campaign_text() -> Callable[..., str]:
    """``campaign_text(id, name=...)``: the YAML of a small valid campaign."""
    return campaign_yaml


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd = tmp; config/ with one campaign; templates/; no TOPSLOT_* from outside."""
    for name in list(os.environ):
        if name.upper().startswith("TOPSLOT_") and name != "TOPSLOT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    (tmp_path / "config" / "topslot.yaml").write_text(
        "log_format: json\ntracking_port: 0\ncompliance:\n  sender_identity: Example Shop\n  postal_address: 1 Example Road\n"
    )
    (tmp_path / "config" / "campaigns" / "spring.yaml").write_text(campaign_yaml("spring-2027"))
    (tmp_path / "templates" / "offer").mkdir(parents=True)
    (tmp_path / "templates" / "offer" / "email.html.j2").write_text(
        '<p>A small gift for you.</p>\n<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
    )
    return tmp_path


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(10)
        self.messages: list[dict[str, str]] = []

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.splitlines())
        self.messages.append(message)
        return message

    def receive_until(self, key: str) -> dict[str, str]:
        while True:
            message = self.receive()
            if key in message:
                return message


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    # AF_UNIX paths are limited to ~107 bytes: keep it short
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="tsn"))
    sock = NotifySocket(directory / "notify")
    yield sock
    sock.sock.close()
    (directory / "notify").unlink(missing_ok=True)
    directory.rmdir()


@pytest.fixture
def logs() -> Iterator[LogTap]:
    """The daemon's log stream (JSON lines), queryable; logging reset afterwards."""
    yield LogTap()
    structlog.reset_defaults()
