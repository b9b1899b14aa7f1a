from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

from topslot.runtime.notify import Notifier


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready("x") is False and n.stopping() is False and n.watchdog_interval is None


def test_messages_reach_a_real_datagram_socket(notify_socket: Any) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    assert n.ready("running: 2 campaign(s)")
    assert notify_socket.receive() == {"READY": "1", "STATUS": "running: 2 campaign(s)", "MAINPID": str(os.getpid())}
    n.reloading()
    assert notify_socket.receive() == {"RELOADING": "1"}
    n.stopping()
    assert notify_socket.receive() == {"STOPPING": "1"}
    n.close()


def test_abstract_socket_address() -> None:
    name = f"topslot-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert server.recv(100) == b"WATCHDOG=1"
    finally:
        server.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == timedelta(seconds=15)
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == timedelta(seconds=15)
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_socket_path_in_tmp_is_short_enough(notify_socket: Any) -> None:
    assert len(str(notify_socket.path)) < 100 and Path(notify_socket.path).exists()
