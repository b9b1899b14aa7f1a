"""``topslot run`` (the systemd entry point) and ``topslot demo`` (the newcomer's tour)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from topslot import event_loop
from topslot.cli.common import fail, say, settings_or_exit
from topslot.cli.init_cmds import write_examples
from topslot.clock import Clock, SimulatedClock, SystemClock
from topslot.settings import config_dir_for

ConfigOption = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads the annotation
    typer.Option(
        "--config", "-c", help="Config directory (topslot.yaml, campaigns/). Default: ./config or $TOPSLOT_CONFIG_DIR."
    ),
]


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)


def run(
    config: ConfigOption = None,
    from_: Annotated[
        Optional[datetime],  # noqa: UP045
        typer.Option("--from", help="Simulate: the clock starts at this instant (UTC unless an offset is given)."),
    ] = None,
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="Simulate: the clock runs this many times faster.")
    ] = 1.0,
) -> None:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP or a changed campaign file reloads campaigns.

    --from/--speed run it on a simulated clock (rehearsals, demos, fault tests); never in production."""
    from topslot.runtime import Daemon

    settings = settings_or_exit(config)
    clock: Clock = SystemClock()
    if from_ is not None or speed != 1.0:
        start = SystemClock().now() if from_ is None else (from_ if from_.tzinfo else from_.replace(tzinfo=UTC))
        clock = SimulatedClock(start, speed)
    try:
        event_loop.run(Daemon(settings, clock=clock).run(), settings.event_loop)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except Exception as exc:  # logged as daemon_failed by the daemon; one line here
        from topslot.runtime.failures import failure_reason

        fail(settings, exc, 1, f"topslot run: {failure_reason(exc, settings)}")


def demo(
    config: ConfigOption = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Keep the daemon up after the tour.")] = False,
) -> None:
    """The tour: SQLite and an outbox under var/demo/, the example campaign validated, its contacts
    imported, audience and plan shown, then the campaign really sent, bucket by bucket, on a clock
    that jumps to each bucket's dispatch start."""
    from topslot.runtime.database_lock import DatabaseInUse
    from topslot.runtime.demo import run_demo

    if config is None and not config_dir_for(None).exists():
        _enter_packaged_examples()
    settings = settings_or_exit(config)
    try:
        code = event_loop.run(run_demo(settings, Console(), keep_running=keep_running), settings.event_loop)
    except DatabaseInUse as exc:  # another tour runs on var/demo/topslot.db
        fail(settings, exc, 1, f"topslot demo: {exc}")
    raise typer.Exit(code)


def _enter_packaged_examples() -> None:
    """No configuration here (an installed topslot in an empty directory): the tour runs on the
    packaged examples, copied (files already there kept) to ``var/demo/example`` as a working
    directory, which becomes the current one: its var/ holds the tour's database and outbox."""
    work = (Path("var") / "demo" / "example").resolve()
    try:
        write_examples(work)
    except OSError as exc:
        say(f"topslot demo: no config/ here, and the packaged examples cannot be written to {work}: {exc}")
        raise typer.Exit(2) from None
    say(
        f"no config/ here: the tour runs on the packaged examples in {work} (`topslot init` writes them where you work)"
    )
    os.chdir(work)
