"""``topslot run`` (the systemd entry point) and ``topslot demo`` (the newcomer's tour)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from daemon.cli.common import settings_or_exit
from daemon.clock import FakeClock, SystemClock

ConfigOption = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads the annotation
    typer.Option("--config", "-c", help="Config directory (topslot.yaml, campaigns/). Default: ./config or $TOPSLOT_CONFIG_DIR."),
]


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)


def run(config: ConfigOption = None) -> None:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP or a changed campaign file reloads campaigns."""
    from daemon.runtime import Daemon

    settings = settings_or_exit(config)
    asyncio.run(Daemon(settings).run())


def demo(
    config: ConfigOption = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Keep the daemon up after the tour.")] = False,
    now: Annotated[
        Optional[datetime],  # noqa: UP045
        typer.Option("--now", help="Pretend it is this instant (UTC unless an offset is given)."),
    ] = None,
) -> None:
    """Set up SQLite under var/, validate and import the examples, show audience and plan, start the daemon."""
    from daemon.runtime.demo import run_demo

    console = Console()
    settings = settings_or_exit(config)
    clock = SystemClock() if now is None else FakeClock(now if now.tzinfo else now.replace(tzinfo=UTC))
    code = asyncio.run(run_demo(settings, console, clock, keep_running=keep_running))
    raise typer.Exit(code)
