"""``topslot run`` and ``topslot demo`` as real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "topslot"  # the installed console script, as systemd runs it
TOPSLOT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "topslot"]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOPSLOT_") and k != "NOTIFY_SOCKET"}
    env.update(extra)
    return env


def start_run(workdir: Path, **env: str) -> subprocess.Popen[str]:
    """``topslot run`` on the workdir's config, as a child with ``env`` (see ``child_env``), its output piped."""
    return subprocess.Popen(
        [*TOPSLOT, "run", "--config", str(workdir / "config")],
        cwd=workdir,
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_until_sigterm_exits_zero_promptly(workdir: Path, notify_socket: Any) -> None:
    proc = start_run(workdir, NOTIFY_SOCKET=str(notify_socket.path))
    try:
        ready = notify_socket.receive_until("READY")
        assert ready["MAINPID"] == str(proc.pid) and ready["STATUS"] == "running: 1 campaign(s)"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)  # a guard against a hang, not a speed target (bench/guards.py)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate()
    assert code == 0, err
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


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-dispatch-processes"])
def test_demo_sends_the_shipped_example_to_the_outbox(tmp_path: Path, processes: int) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config", ignore=shutil.ignore_patterns("*.db"))
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "var" / "demo").mkdir(parents=True)
    (tmp_path / "var" / "demo" / "leftover").write_text("from an earlier tour")
    done = subprocess.run(
        [*TOPSLOT, "demo"],
        cwd=tmp_path,
        env=child_env(COLUMNS="120", TOPSLOT_DISPATCH_PROCESSES=str(processes)),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps = ("1. database", "2. campaigns", "3. example data", "4. audiences", "5. plan", "6. sending", "7. outbox")
    for step in steps:
        assert step in done.stdout
    assert "what next" in done.stdout and "valid" in done.stdout
    demo = tmp_path / "var" / "demo"
    assert not (demo / "leftover").exists()  # every tour starts fresh
    db = sqlite3.connect(demo / "topslot.db")
    states = dict(db.execute("select state, count(*) from deliveries group by state").fetchall())
    assert set(states) == {"sent"}, states
    if processes > 1:  # the helper came up, and (below) nobody got a message twice
        assert "claimed and sent by 2 processes" in done.stdout
    sent = dict(db.execute("select channel, count(*) from deliveries group by channel").fetchall())
    emails = sorted((demo / "outbox" / "new").iterdir())
    assert len(emails) == sent["email"] > 0
    message = BytesParser(policy=policy.default).parsebytes(emails[0].read_bytes())
    assert message["Subject"].startswith(("A gift for Mom", "【广告】A gift for Mom"))
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    code = db.execute("select coupon_code from deliveries where channel='email' limit 1").fetchone()[0]
    assert code.startswith("MOM")
    sms = (demo / "outbox" / "sms.jsonl").read_text().splitlines()
    assert len(sms) == sent["sms"]
    # topslot adds the opt-out line of the recipient's country (compliance.sms_opt_out): 回TD退订 in China
    country = dict(db.execute("select d.id, c.country from deliveries d join contacts c on c.id = d.contact_id"))
    lines = [json.loads(line) for line in sms]
    assert {country[m["delivery_id"]] == "CN" for m in lines} == {True, False}  # both kinds in the demo
    for m in lines:
        assert m["body"].endswith("回TD退订" if country[m["delivery_id"]] == "CN" else "Reply STOP to opt out")
    assert all("/s/" in m["body"] for m in lines)  # short links
    _assert_the_loop_closed(done.stdout, db, demo)


def _assert_the_loop_closed(stdout: str, db: sqlite3.Connection, demo: Path) -> None:
    """Steps 8 and 9: simulated recipients reached the real tracking server and webhook over HTTP,
    and the report shows what they did."""
    assert "8. simulated recipients" in stdout and "9. report" in stdout
    events = dict(
        ((kind, label), n) for kind, label, n in db.execute("select kind, label, count(*) from events group by 1, 2")
    )
    assert events.get(("open", "human"), 0) > 0
    assert events.get(("open", "machine_open"), 0) > 0  # Apple-MPP-like proxy opens, told apart
    assert events.get(("click", "human"), 0) > 0
    assert events.get(("click", "scanner"), 0) > 0
    assert events.get(("unsubscribe", None), 0) == 1
    post = db.execute("select method from events where kind = 'unsubscribe'").fetchone()[0]
    assert post == "POST"  # RFC 8058 one-click
    conversions = dict(db.execute("select refund, count(*) from conversions where campaign_id is not null group by 1"))
    assert conversions.get(0, 0) > 0 and conversions.get(1, 0) == 1  # orders credited to the campaign; one refund
    by = {row[0] for row in db.execute("select attributed_by from conversions")}
    assert {"coupon", "click"} <= by
    html = demo / "report.html"
    assert html.is_file() and "<html" in html.read_text(encoding="utf-8").lower()
    assert "report.html" in stdout
    assert "machine opens, unique" in stdout and "unsubscribes" in stdout and "refunds" in stdout
    assert "promotion cost" in stdout and "how computed" in stdout
