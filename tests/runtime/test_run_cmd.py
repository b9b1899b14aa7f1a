"""``topslot run`` and ``topslot demo`` as real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "topslot"  # the installed console script, as systemd runs it
TOPSLOT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "daemon"]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOPSLOT_") and k != "NOTIFY_SOCKET"}
    env.update(extra)
    return env


def test_run_until_sigterm_exits_zero_promptly(workdir: Path, notify_socket: Any) -> None:
    proc = subprocess.Popen(
        [*TOPSLOT, "run", "--config", str(workdir / "config")],
        cwd=workdir,
        env=child_env(NOTIFY_SOCKET=str(notify_socket.path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = notify_socket.receive_until("READY")
        assert ready["MAINPID"] == str(proc.pid) and ready["STATUS"] == "running: 1 campaign(s)"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate()
    assert code == 0, err
    assert elapsed < 5
    assert notify_socket.receive_until("STOPPING")["STOPPING"] == "1"
    events = [json.loads(line)["event"] for line in out.splitlines()]  # not a TTY: JSON lines
    assert events[0] == "daemon_starting" and events[-1] == "daemon_stopped"
    assert "campaign_loaded" in events


def test_run_with_bad_settings_lists_every_problem_and_exits_2(workdir: Path) -> None:
    (workdir / "config" / "topslot.yaml").write_text("log_level: loud\ntracking_port: -1\n")
    done = subprocess.run(
        [*TOPSLOT, "run", "--config", str(workdir / "config")],
        cwd=workdir,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    path = workdir / "config" / "topslot.yaml"
    assert done.stderr.splitlines()[0].startswith(f"{path}:1:1: log_level:")
    assert done.stderr.splitlines()[1].startswith(f"{path}:2:1: tracking_port:")


def test_demo_on_the_shipped_example(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config", ignore=shutil.ignore_patterns("*.db"))
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    done = subprocess.run(
        [*TOPSLOT, "demo"],
        cwd=tmp_path,
        env=child_env(COLUMNS="120"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "var" / "topslot.db").is_file()
    assert (tmp_path / "var" / "outbox").is_dir()
    for step in ("1. database", "2. campaigns", "3. example data", "4. audiences", "5. plan", "6. daemon"):
        assert step in done.stdout
    assert "daemon_ready" in done.stdout and "what next" in done.stdout
    assert "0 problem" not in done.stdout and "valid" in done.stdout
    # twice in a row is fine (imports upsert, migrations are idempotent)
    again = subprocess.run([*TOPSLOT, "demo"], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
