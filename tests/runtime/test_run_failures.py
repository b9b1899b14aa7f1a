"""``topslot run`` when something is wrong: one clear line, one ``daemon_failed`` event, no traceback;
SIGTERM during start-up is a graceful stop; a hostile campaign file does not stop the start."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_yaml_source import alias_bomb

from runtime.test_run_cmd import TOPSLOT, child_env, start_run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOPSLOT, "run", "--config", str(workdir / "config")],
        cwd=workdir, env=child_env(**env), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def assert_failed_clearly(done: subprocess.CompletedProcess[str], *needles: str) -> dict[str, Any]:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = done.stderr.splitlines()
    assert line.startswith("topslot run: ") and all(n in line for n in needles), line
    (failed,) = [e for e in events(done.stdout) if e["event"] == "daemon_failed"]
    assert failed["level"] == "error" and failed["reason"] == line.removeprefix("topslot run: ")
    return failed


def test_database_unreachable(workdir: Path) -> None:
    port = free_port()  # nothing listens there
    done = run(workdir, TOPSLOT_DATABASE_URL=f"postgresql+asyncpg://topslot:s3cret-pw@127.0.0.1:{port}/x")

    assert_failed_clearly(done, f"127.0.0.1:{port}", "database_url")
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_tracking_port_in_use(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(workdir, TOPSLOT_TRACKING_PORT=str(port))

    assert_failed_clearly(done, f"127.0.0.1:{port}", "tracking_port")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (a hung database)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_sigterm_during_start_up_stops_gracefully(workdir: Path, silent_server: int) -> None:
    proc = start_run(workdir, TOPSLOT_DATABASE_URL=f"postgresql+asyncpg://u@127.0.0.1:{silent_server}/x")
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # start-up is stuck opening the database when the signal comes
            seen.append(line)
            if '"daemon_starting"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate()
    names = [e["event"] for e in events("".join(seen) + out)]
    assert code == 0, err
    assert "Traceback" not in err
    assert names[0] == "daemon_starting" and names[-1] == "daemon_stopped"
    assert "daemon_stopping" in names and "daemon_ready" not in names and "daemon_failed" not in names


def test_alias_bomb_does_not_stop_the_start(workdir: Path, notify_socket: Any) -> None:
    (workdir / "config" / "campaigns" / "bomb.yaml").write_text(alias_bomb())
    proc = start_run(workdir, NOTIFY_SOCKET=str(notify_socket.path))
    try:
        ready = notify_socket.receive_until("READY")  # within the socket's 10 s timeout
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, _ = proc.communicate()
    assert code == 0
    assert ready["STATUS"] == "running: 1 campaign(s), 1 problem(s)"
    (problem,) = [e for e in events(out) if e["event"] == "campaign_problem"]
    assert problem["path"].endswith("bomb.yaml") and "the alias *a3" in problem["message"]


def test_at_debug_level_the_traceback_comes_before_the_one_line(workdir: Path) -> None:
    """As for every command (``common.fail``): the traceback first, then the same one line, exit 1."""
    port = free_port()
    done = run(
        workdir, TOPSLOT_DATABASE_URL=f"postgresql+asyncpg://topslot@127.0.0.1:{port}/x", TOPSLOT_LOG_LEVEL="debug"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback (most recent call last)" in done.stderr and "ConnectionRefusedError" in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("topslot run: database ") and f"127.0.0.1:{port}" in last
    (failed,) = [e for e in events(done.stdout) if e["event"] == "daemon_failed"]
    assert failed["reason"] == last.removeprefix("topslot run: ")
