"""SQLite stays single-node: a second ``topslot run`` (or ``topslot demo``) on the same SQLite file
stops at start-up with one line naming the daemon that holds it; CLI commands and the daemon's own
dispatch helpers are not refused; the lock goes with its daemon, however it ends (SIGKILL too)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.test_run_cmd import TOPSLOT, child_env, start_run
from runtime.test_run_failures import assert_failed_clearly, run
from topslot.runtime.database_lock import DatabaseInUse, hold_database, lock_path

READY_WAIT = 90  # seconds: a guard against a hang, not a speed target


def ready(notify_socket: Any, proc: subprocess.Popen[str]) -> None:
    notify_socket.sock.settimeout(READY_WAIT)
    assert notify_socket.receive_until("READY")["MAINPID"] == str(proc.pid)


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def topslot(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOPSLOT, *args, "--config", str(workdir / "config")], cwd=workdir, env=child_env(),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_a_second_daemon_on_one_sqlite_file_is_refused_until_the_first_is_gone(
    workdir: Path, notify_socket: Any
) -> None:
    database = workdir / "var" / "topslot.db"
    first = start_run(workdir, NOTIFY_SOCKET=str(notify_socket.path), TOPSLOT_DISPATCH_PROCESSES="2")
    others: list[subprocess.Popen[str]] = []
    try:
        ready(notify_socket, first)
        holder = json.loads(lock_path(database).read_text())
        assert (holder["pid"], holder["host"]) == (first.pid, socket.gethostname())

        second = run(workdir)  # the same configuration, the same file
        failed = assert_failed_clearly(
            second, f"another topslot daemon (pid {first.pid} on {socket.gethostname()}, since "
        )
        assert str(database) in failed["reason"] and "PostgreSQL" in failed["reason"]
        assert "daemon_ready" not in second.stdout

        (workdir / "people.csv").write_text("external_id,email,gender\nmei,mei@example.com,female\n")
        imports = ("contacts", "import", str(workdir / "people.csv"))
        for args in (("status", "--json"), ("campaigns", "list"), imports, ("report", "--all-campaigns")):
            done = topslot(workdir, *args)  # commands, readers and writers, share the file with the daemon
            assert done.returncode == 0, (args, done.stderr)
        roles: set[str] = set()
        for _ in range(100):  # the first daemon's helper started beside it (its heartbeat comes within seconds)
            roles = {p["role"] for p in json.loads(topslot(workdir, "status", "--json").stdout)["processes"]}
            if roles == {"daemon", "helper"}:
                break
            time.sleep(0.2)
        assert roles == {"daemon", "helper"}

        assert stop(first, signal.SIGTERM) == 0  # a graceful stop frees the file
        others.append(start_run(workdir, NOTIFY_SOCKET=str(notify_socket.path)))
        ready(notify_socket, others[-1])
        assert json.loads(lock_path(database).read_text())["pid"] == others[-1].pid
        assert stop(others[-1], signal.SIGKILL) == -signal.SIGKILL  # so does a kill: the kernel drops the lock
        others.append(start_run(workdir, NOTIFY_SOCKET=str(notify_socket.path)))
        ready(notify_socket, others[-1])
        assert stop(others[-1], signal.SIGTERM) == 0
    finally:
        for proc in (first, *others):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


HOLD = """\
import sys
from topslot.runtime.database_lock import hold_database
with hold_database(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_demo_is_refused_before_it_clears_the_first_ones_directory(workdir: Path) -> None:
    demo = workdir / "var" / "demo"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, f"sqlite:///{demo / 'topslot.db'}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (demo / "outbox").mkdir()
        done = subprocess.run([*TOPSLOT, "demo"], cwd=workdir, env=child_env(), capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
    finally:
        holder.communicate("", timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"topslot demo: another topslot daemon (pid {holder.pid} on {socket.gethostname()}"), line
    assert (demo / "outbox").is_dir()  # the running tour's files are left alone


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'topslot.db'}"
    with hold_database(url) as outer, hold_database(url) as inner:  # the demo, then its daemon
        assert outer == inner == tmp_path / "db" / "topslot.db.lock"
        child = subprocess.run([sys.executable, "-c", HOLD, url], input="", capture_output=True, text=True,
                               timeout=60, check=False)  # fmt: skip
        assert child.returncode == 1 and "DatabaseInUse" in child.stderr
    child = subprocess.run([sys.executable, "-c", HOLD, url], input="", capture_output=True, text=True, timeout=60,
                           check=False)  # fmt: skip
    assert child.returncode == 0 and child.stdout == "held\n"


@pytest.mark.parametrize("url", ["postgresql+asyncpg://u@127.0.0.1:1/x", "sqlite+aiosqlite:///:memory:", "sqlite://"])
def test_postgresql_and_memory_have_nothing_to_lock(url: str) -> None:
    with hold_database(url) as held, hold_database(url):
        assert held is None


def test_the_refusal_names_the_holder_even_when_it_wrote_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import topslot.runtime.database_lock as lock

    monkeypatch.setattr(lock, "READ_TRIES", 2)
    url = f"sqlite:///{tmp_path / 'topslot.db'}"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        lock_path(tmp_path / "topslot.db").write_text("")  # as if it died before writing who it is
        with pytest.raises(DatabaseInUse, match=r"another topslot daemon \(pid unknown on an unknown host, since an "):
            with hold_database(url):
                pass
    finally:
        child.communicate("", timeout=30)
