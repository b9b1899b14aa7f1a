"""Benchmark: SMTP transport throughput against Postfix's smtp-sink, side by side in one run.

    .venv/bin/python bench/smtp_transport.py [--messages 10000] [--runs 3] [--size 3072]

Installs Debian's ``postfix`` package when ``smtp-sink`` is missing (root; no mail system is
configured: debconf is preseeded with "No configuration"), starts ``smtp-sink`` on 127.0.0.1, and
measures, each the median of ``--runs`` runs, with pre-built messages of ``--size`` bytes:

- ``smtp-source`` (Postfix's C client) with 1 and 20 persistent sessions: the physical limit here;
- topslot's ``SmtpPool`` with pool sizes 1, 10 and 20 (2 sender tasks per connection, recipients
  spread over 1,000 domains, no rate limit);
- naive ``aiosmtplib.send()`` per message (a new connection each time), 10 at a time;
- ``SmtpPool`` (20) again under uvloop, when uvloop is installed.

Prints msg/s per line and the ratios against smtp-source (20 sessions) and the naive sender.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosmtplib  # noqa: E402

from topslot.channels.base import EmailEnvelope  # noqa: E402
from topslot.channels.smtp import SmtpPool  # noqa: E402
from topslot.logs import configure_logging  # noqa: E402
from topslot.settings import SmtpServer  # noqa: E402

SBIN = Path("/usr/sbin")
DOMAINS = 1000
SENDER = "news@shop.example"


# ---------------------------------------------------------------- smtp-sink


def postfix_tool(name: str) -> str | None:
    found = shutil.which(name) or (str(SBIN / name) if (SBIN / name).exists() else None)
    return found


def ensure_postfix_tools() -> tuple[str, str]:
    """Paths of smtp-sink and smtp-source, installing Debian's postfix package if needed."""
    sink, source = postfix_tool("smtp-sink"), postfix_tool("smtp-source")
    if sink and source:
        return sink, source
    if os.geteuid() != 0:
        sys.exit("smtp-sink is missing: install Debian's 'postfix' package (needs root)")
    print("installing postfix (for smtp-sink / smtp-source)…", flush=True)
    preseed = "postfix postfix/main_mailer_type select No configuration\npostfix postfix/mailname string localhost\n"
    subprocess.run(["debconf-set-selections"], input=preseed.encode(), check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "postfix"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, check=True, stdout=subprocess.DEVNULL)
    sink, source = postfix_tool("smtp-sink"), postfix_tool("smtp-source")
    if not (sink and source):
        sys.exit("postfix installed but smtp-sink/smtp-source not found")
    return sink, source


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sink(sink: str, port: int, *options: str) -> subprocess.Popen[bytes]:
    """smtp-sink on 127.0.0.1:``port`` (backlog 1024) with ``options`` (e.g. ``-D FILE``: dump every
    message to FILE), once it accepts connections."""
    command = [sink, *options]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    process = subprocess.Popen([*command, f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("smtp-sink did not start")


# ---------------------------------------------------------------- messages


def build_messages(count: int, size: int) -> list[EmailEnvelope]:
    """Pre-built CRLF messages of about ``size`` bytes (the renderer's job is not measured here)."""
    messages = []
    for i in range(count):
        rcpt = f"user{i}@d{i % DOMAINS}.example"
        head = (
            f"From: Shop <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: Mother's Day offer\r\n"
            f"Message-ID: <{i}.bench@shop.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
        body = (line * (max(0, size - len(head)) // len(line) + 1))[: max(0, size - len(head) - 2)] + b"\r\n"
        messages.append(EmailEnvelope(i + 1, SENDER, rcpt, head + body))
    return messages


# ---------------------------------------------------------------- clients


def run_smtp_source(source: str, port: int, sessions: int, count: int, size: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [source, "-s", str(sessions), "-m", str(count), "-l", str(size), "-f", SENDER, "-t", "user@d1.example",
         f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return count / (time.perf_counter() - started)


async def run_pool(port: int, pool_size: int, messages: list[EmailEnvelope]) -> float:
    config = SmtpServer(
        host="127.0.0.1", port=port, tls="none", pool_size=pool_size, rate_per_second=1e9, max_per_domain=1000
    )
    pool = SmtpPool({"sink": config})
    queue = iter(messages)

    async def worker() -> None:
        for message in queue:
            await pool.send(message)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(pool_size * 2)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return len(messages) / elapsed


async def run_naive(port: int, messages: list[EmailEnvelope], concurrency: int = 10) -> float:
    queue = iter(messages)

    async def worker() -> None:
        for m in queue:
            await aiosmtplib.send(m.data, sender=m.mail_from, recipients=[m.rcpt_to], hostname="127.0.0.1", port=port)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(messages) / (time.perf_counter() - started)


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    values = [measure() for _ in range(runs)]
    return statistics.median(values), values


def run_loop(make: Callable[[], Coroutine[Any, Any, float]], *, uvloop: bool = False) -> float:
    if uvloop:
        import uvloop as uv

        return uv.run(make())
    return asyncio.run(make())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=3072)
    args = parser.parse_args()
    configure_logging("warning", "console", stream=sys.stderr)

    sink, source = ensure_postfix_tools()
    port = free_port()
    process = start_sink(sink, port)
    n, size = args.messages, args.size
    messages = build_messages(n, size)
    naive_n = max(500, n // 5)  # the naive sender is slow; fewer messages keep the run short
    results: list[tuple[str, float, list[float]]] = []

    def record(label: str, measure: Callable[[], float]) -> None:
        value, values = median_of(args.runs, measure)
        results.append((label, value, values))
        print(f"  {label:<44} {value:>8,.0f} msg/s   runs: {', '.join(f'{v:,.0f}' for v in values)}", flush=True)

    try:
        print(f"{n:,} messages of {size:,} bytes to smtp-sink on 127.0.0.1:{port}, median of {args.runs} runs")
        record("smtp-source, 1 session (C)", lambda: run_smtp_source(source, port, 1, n, size))
        record("smtp-source, 20 sessions (C)", lambda: run_smtp_source(source, port, 20, n, size))
        for pool_size in (1, 10, 20):
            record(
                f"topslot SmtpPool, pool_size {pool_size}",
                lambda p=pool_size: run_loop(lambda: run_pool(port, p, messages)),
            )  # type: ignore[misc]
        record(
            f"naive aiosmtplib.send() ×10 ({naive_n:,} msgs)",
            lambda: run_loop(lambda: run_naive(port, messages[:naive_n])),
        )
        try:
            import uvloop  # noqa: F401

            record(
                "topslot SmtpPool, pool_size 20, uvloop",
                lambda: run_loop(lambda: run_pool(port, 20, messages), uvloop=True),
            )
        except ImportError:
            print("  (uvloop not installed: skipped)")
    finally:
        process.terminate()
        process.wait(timeout=10)

    by_label = {label: value for label, value, _ in results}
    limit = by_label["smtp-source, 20 sessions (C)"]
    naive = next(v for label, v, _ in results if label.startswith("naive"))
    print("\nratios")
    for label, value, _ in results:
        print(f"  {label:<44} {value / limit:>6.2f}× smtp-source(20)   {value / naive:>6.2f}× naive")


if __name__ == "__main__":
    main()
