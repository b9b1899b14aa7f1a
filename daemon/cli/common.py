"""Plumbing shared by the CLI commands: settings, the database, campaigns, plain error lines.

Exit codes: 2 when the command cannot start (bad arguments, settings, configuration directory or
campaign), 1 when the database cannot be used (unreachable, missing, outdated schema) or the
command's own work found problems. A failure is one line on stderr; at ``log_level: debug`` the
traceback comes first.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn, TypeVar, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.config import load_campaigns
from topslot.errors import InvalidInput, Problem
from topslot.logs import CurrentStderr, configure_logging, get_logger
from topslot.settings import Settings, load_settings
from topslot.store.db import DatabaseUnavailable, prepare_database

T = TypeVar("T")
ConfigOption = Annotated[Path, typer.Option("--config", help="Configuration directory (topslot.yaml, campaigns/).")]
out = Console()
err = Console(stderr=True)


class ChannelChoice(StrEnum):
    """A channel, as a choice ``--help`` lists."""

    email = "email"
    sms = "sms"
    im = "im"


def say(text: str) -> None:
    """One plain line on stderr (never wrapped, no markup: paths and messages stay greppable)."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        say(str(problem))


def settings_or_exit(config_dir: Path | None, *, report: Callable[[list[Problem]], None] = print_problems) -> Settings:
    """Settings, or every problem (``report``: on stderr, one ``path:line:column: message`` per line)
    and exit 2. The configuration directory must exist: a mistyped ``--config`` is an error, not
    empty settings."""
    try:
        settings = load_settings(config_dir)
    except InvalidInput as exc:
        report(exc.problems)
        raise typer.Exit(2) from None
    if (problem := config_dir_problem(settings.config_dir)) is not None:
        say(problem)
        raise typer.Exit(2)
    return settings


def config_dir_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be the configuration directory, or None when it can."""
    if directory.is_dir():
        return None
    state = "is not a directory" if directory.exists() else "does not exist"
    return (
        f"configuration directory {directory} {state} (--config or TOPSLOT_CONFIG_DIR; "
        "`topslot init` writes a working one)"
    )


def with_engine(
    settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]], *, read_only: bool = False, unavailable: int = 1
) -> T:
    """Open the database, run ``work``, close.

    Commands that write get the database created (SQLite) and migrated; ``read_only`` commands need it
    to exist at the current schema and never create or migrate it. A database that cannot be used is
    one line on stderr and exit ``unavailable`` (1; see ``topslot.store.db.prepare_database``)."""

    async def run() -> T:
        engine = await prepare_database(settings.database_url, read_only=read_only)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DatabaseUnavailable as exc:
        fail(settings, exc, unavailable)


def fail(settings: Settings, exc: BaseException, code: int, line: str | None = None) -> NoReturn:
    """``line`` (default: ``exc`` itself) as one line on stderr, then exit ``code``; the traceback
    first at ``log_level: debug``."""
    if settings.log_level == "debug":
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, soft_wrap=True, end="")
    say(str(exc) if line is None else line)
    raise typer.Exit(code) from None


def load_campaign_or_exit(settings: Settings, campaign_id: str) -> Campaign:
    result = load_campaigns(settings.campaigns_dir, settings.templates_dir)
    campaign = result.campaigns.get(campaign_id)
    if campaign is None:
        print_problems(result.problems)
        known = ", ".join(sorted(result.campaigns)) or "none"
        say(f"campaign {campaign_id!r} not found or invalid (valid campaigns: {known})")
        raise typer.Exit(2)
    return campaign


def cli_logger(settings: Settings) -> Any:
    """A logger for commands that change what the daemon will do (suppressions removed, contacts
    forgotten): structured lines on stderr, scrubbed like the daemon's, so stdout stays the data."""
    stream = cast(IO[str], CurrentStderr())
    configure_logging(settings.log_level, settings.log_format, settings.secret_values(), stream)
    return get_logger("cli")


def show_progress() -> bool:
    """Progress bars only on a terminal: never in logs, pipes or captured output."""
    return err.is_terminal and not err.is_dumb_terminal


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A ``report(done)`` callable that moves a progress bar on stderr when it is a terminal, and
    does nothing otherwise. ``total`` None: a count without a bar end."""
    if not show_progress():
        yield lambda _done: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if total is not None else TextColumn("{task.completed:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.update(task, completed=done)
