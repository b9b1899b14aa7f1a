"""``topslot run`` as a real process, scraped over HTTP: ``/readyz`` once it is ready, ``/metrics``
with its database snapshot (an empty ledger: no contacts), linted by ``promtool``. Real values after
real sends and hits: ``tests/test_metrics.py``."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .test_run_cmd import start_run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


@contextmanager
def ready_daemon(workdir: Path, notify_socket: Any) -> Iterator[subprocess.Popen[str]]:
    """``topslot run`` until it says READY; on leaving, SIGTERM and a clean exit (killed if not)."""
    proc = start_run(workdir, NOTIFY_SOCKET=str(notify_socket.path))
    try:
        notify_socket.receive_until("READY")
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_running_daemon_is_ready_and_scraped(workdir: Path, notify_socket: Any) -> None:
    port = free_port()
    config = workdir / "config" / "topslot.yaml"
    config.write_text(config.read_text().replace("tracking_port: 0", f"tracking_port: {port}"))
    base = f"http://127.0.0.1:{port}"
    with ready_daemon(workdir, notify_socket):
        status, body = get(f"{base}/readyz")
        assert status == 200, body
        assert json.loads(body) == {
            "status": "ready",
            "checks": {"database": "ok", "campaigns": "ok", "scheduler": "ok"},
        }
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        deadline = time.monotonic() + 60  # a guard against a hang: the first snapshot is read at start
        while True:
            status, text = get(f"{base}/metrics")
            assert status == 200
            if sample(text, "topslot_metrics_snapshot_age_seconds") is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sample(text, "topslot_ledger_backlog", state="planned") == 0  # from its database: no contacts
        assert sample(text, "topslot_campaign_reload_failures_total") == 0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'): the scrape was not linted")
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()


def test_metrics_on_a_port_of_their_own(workdir: Path, notify_socket: Any) -> None:
    """``metrics_port``: /metrics (with /healthz and /readyz) on its own listener, and no longer on
    the public tracking port; anything else is a 404 there."""
    port, ops = free_port(), free_port()
    config = workdir / "config" / "topslot.yaml"
    text = config.read_text().replace("tracking_port: 0", f"tracking_port: {port}")
    config.write_text(text + f"metrics_host: 127.0.0.1\nmetrics_port: {ops}\n")
    with ready_daemon(workdir, notify_socket):
        status, scrape = get(f"http://127.0.0.1:{ops}/metrics")
        assert status == 200 and sample(scrape, "topslot_campaign_reload_failures_total") == 0
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 404  # not on the recipients' port
        for base in (f"http://127.0.0.1:{ops}", f"http://127.0.0.1:{port}"):
            assert get(f"{base}/readyz")[0] == 200 and get(f"{base}/healthz")[0] == 200
        assert get(f"http://127.0.0.1:{ops}/o/anything.gif")[0] == 404  # no tracking there


def test_a_metrics_port_in_use_is_one_clear_line(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = workdir / "config" / "topslot.yaml"
        config.write_text(config.read_text() + f"metrics_port: {busy}\n")
        proc = start_run(workdir)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(f"127.0.0.1:{busy}" in line and "metrics_port" in line for line in lines), err
    assert "Traceback" not in err
