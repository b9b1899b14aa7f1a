"""Benchmark: how fast topslot's guards act — the speed targets the tests leave out (tests never time).

    .venv/bin/python bench/guards.py [--repeat 5]

Measured, medians of ``--repeat``, each against its target:

- a YAML alias bomb (nine levels of ten aliases) refused by the loader (target < 1 s; issue 9);
- template operations that would build huge values refused by the sandbox (target < 1 s each);
- a render that never ends stopped at its deadline (0.3 s here: the stop lands within 0.3–1.5 s);
- ``topslot run`` stopping after SIGTERM, from the signal to its exit (target < 5 s);
- a real token bucket's pace at 50/s (the rate limits' real-time check: tests use a frozen clock).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from test_yaml_source import alias_bomb  # noqa: E402

from topslot.channels.ratelimit import TokenBucket  # noqa: E402
from topslot.rendering.bounds import DEFAULT_LIMITS, RenderLimits, render_bounded  # noqa: E402
from topslot.templating import RenderLimitError, make_environment, sample_context_for  # noqa: E402
from topslot.yaml_source import load_yaml_text  # noqa: E402

BOMBS = [
    "{{ 'a'.center(10**9) }}",
    "{{ '%999999999s' % 'a' }}",
    "{% set s = 'a' * 100000 %}{% set s = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}{{ s }}",
    "{{ range(10**7)|list }}",
]
ENDLESS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
QUICK = RenderLimits(max_seconds=0.3, max_chars=100_000)


def median_seconds(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def refused(source: str, limits: RenderLimits = DEFAULT_LIMITS) -> Callable[[], None]:
    env = make_environment(REPO / "templates")
    ctx = sample_context_for("c1", "Camp", "https://shop.example.com/")
    template = env.from_string(source)

    def run() -> None:
        try:
            render_bounded(template, ctx, limits)
        except RenderLimitError:
            return
        raise AssertionError(f"not refused: {source}")

    return run


def sigterm_to_exit() -> float:
    """Start ``topslot run`` on a scratch config, wait for daemon_ready, SIGTERM, time the exit."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(REPO / "config", work / "config", ignore=shutil.ignore_patterns("*.db", "example"))
        shutil.copytree(REPO / "templates", work / "templates")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOPSLOT_")}
        env |= {"TOPSLOT_TRACKING_PORT": str(port), "TOPSLOT_LOG_FORMAT": "json"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "topslot", "run", "--config", "config"],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if '"daemon_ready"' in line:
                    break
            started = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            return time.perf_counter() - started
        finally:
            if proc.poll() is None:
                proc.kill()


async def paced(rate: float, count: int) -> float:
    """Seconds from the first to the last of ``count`` acquires of a real token bucket at ``rate``."""
    bucket = TokenBucket(rate, burst=1)
    stamps = []
    for _ in range(count):
        await bucket.acquire()
        stamps.append(time.perf_counter())
    return stamps[-1] - stamps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, float, float, float]] = []  # (what, seconds, lowest allowed, highest allowed)
    bomb = alias_bomb()
    rows.append(("YAML alias bomb refused", median_seconds(lambda: load_yaml_text(bomb, "b.yaml"), args.repeat), 0, 1))
    for source in BOMBS:
        rows.append((f"refused: {source[:50]}", median_seconds(refused(source), args.repeat), 0, 1))
    rows.append(
        ("endless render stopped (deadline 0.3 s)", median_seconds(refused(ENDLESS, QUICK), args.repeat), 0.3, 1.5)
    )
    rows.append(("topslot run: SIGTERM → exit", statistics.median(sigterm_to_exit() for _ in range(args.repeat)), 0, 5))
    # a token bucket at 50/s, burst 1: 10 intervals of 20 ms (within 5 %), never a burst
    span, gap = statistics.median(asyncio.run(paced(50.0, 11)) for _ in range(args.repeat)), 0.2
    rows.append(("token bucket at 50/s: 11 acquires span (target 0.2 s ± 5 %)", span, gap * 0.95, gap * 1.05))
    ok = True
    for what, seconds, low, high in rows:
        passed = low <= seconds < high
        ok &= passed
        print(f"  {what:<62} {seconds * 1000:>9.1f} ms  target [{low:g}, {high:g}) s  {'PASS' if passed else 'FAIL'}")
    print(f"overall: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
