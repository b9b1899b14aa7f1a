"""``topslot run`` (the systemd entry point) and ``topslot demo`` (the newcomer's tour)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from daemon.clock import SystemClock
from daemon.errors import InvalidInput
from daemon.settings import Settings, load_settings

ConfigOption = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads the annotation
    typer.Option("--config", "-c", help="Config directory (topslot.yaml, campaigns/). Default: ./config or $TOPSLOT_CONFIG_DIR."),
]


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)


def _settings_or_exit(config: Path | None) -> Settings:
    """Settings, or every problem on stderr (one ``path:line:column: message`` per line) and exit 2."""
    try:
        return load_settings(config)
    except InvalidInput as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(2) from None


def run(config: ConfigOption = None) -> None:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP or a changed campaign file reloads campaigns."""
    from daemon.runtime import Daemon

    settings = _settings_or_exit(config)
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
    settings = _settings_or_exit(config)
    instant = SystemClock().now() if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC))
    code = asyncio.run(run_demo(settings, console, instant, keep_running=keep_running))
    raise typer.Exit(code)
