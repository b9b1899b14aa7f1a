"""``topslot bounces import PATH``: returned mail collected outside the receiver (a mailbox file, a
Maildir, one message), read, matched and recorded exactly as the receiver does."""

from __future__ import annotations

import mailbox
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.bounces.receiver import receive
from topslot.cli.common import ConfigOption, cli_logger, out, say, settings_or_exit, with_engine
from topslot.clock import SystemClock
from topslot.links.keys import KeyringError, load_keyring

bounces_app = typer.Typer(help="Bounces and complaints collected outside the receiver.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bounces_app, name="bounces")


EX_TEMPFAIL = 75  # sysexits.h: Postfix's pipe(8) keeps the message and tries again later


def messages(path: Path, limit: int) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) of each message: ``-`` one message on stdin (Postfix's pipe), a Maildir
    (``cur``/``new``), an mbox file, or one .eml file; each message cut at ``limit`` bytes."""
    if str(path) == "-":
        yield "stdin", sys.stdin.buffer.read(limit)
        return
    if path.is_dir():
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise ValueError(f"{path} is a directory but not a Maildir (no cur/ or new/)")
        box = mailbox.Maildir(path, create=False)
        for key in sorted(box.iterkeys()):
            with box.get_file(key) as handle:
                yield f"{path}/{key}", handle.read(limit)
        return
    with path.open("rb") as handle:
        head = handle.read(5)
    if head == b"From ":
        for index, message in enumerate(mailbox.mbox(path, create=False)):
            yield f"{path}#{index + 1}", message.as_bytes()[:limit]
        return
    with path.open("rb") as handle:
        yield str(path), handle.read(limit)


@bounces_app.command("import")
def bounces_import(
    path: Annotated[Path, typer.Argument(help="A Maildir, an mbox file, one message (.eml), or - for stdin.")],
    config: ConfigOption = Path("config"),
) -> None:
    """Read bounces (DSNs and the common non-standard ones), spam complaints (ARF) and auto-replies;
    record each that names one of our deliveries (its VERP return path, or the signed headers it
    returns). Prints what was found per kind and result; re-importing changes nothing. With ``-``
    (one message on stdin, as Postfix's pipe(8) gives it) a database that cannot be reached exits 75,
    so that the MTA keeps the message and tries again."""
    settings = settings_or_exit(config)
    cli_logger(settings)  # what each message came to, as log lines on stderr; stdout stays the counts
    piped = str(path) == "-"
    if not piped and not path.exists():
        say(f"{path}: no such file or directory")
        raise typer.Exit(2)
    try:
        keyring = load_keyring(settings)
    except KeyringError as exc:
        say(f"cannot verify return paths and tokens: {exc}")
        raise typer.Exit(2) from None

    async def work(engine: AsyncEngine) -> Counter[tuple[str, str]]:
        found: Counter[tuple[str, str]] = Counter()
        for where, raw in messages(path, settings.bounces.max_message_bytes):
            try:
                recorded = await receive(engine, keyring, settings.bounces, raw, (), SystemClock().now())
            except ValueError as exc:
                say(f"{where}: {exc}")
                found[("unreadable", "skipped")] += 1
                continue
            found[(recorded.kind.value, recorded.result.value)] += 1
        return found

    try:
        found = with_engine(settings, work, unavailable=EX_TEMPFAIL if piped else 1)
    except (ValueError, OSError, mailbox.Error) as exc:
        say(f"{path}: {exc}")
        raise typer.Exit(2) from None
    for (kind, result), n in sorted(found.items()):
        out.print(f"{kind:<12} {result:<10} {n:>6}", markup=False, highlight=False)
    out.print(f"{'total':<23} {sum(found.values()):>6}", markup=False, highlight=False)
