"""``topslot init [DIR]``: a working directory from the packaged examples (settings with comments,
the example campaign and its templates, example contacts and events, a systemd unit and env file).
Nothing that exists is ever overwritten: each file is created exclusively, or kept as it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from topslot.cli.common import say
from topslot.examples import example_files


def register(app: typer.Typer) -> None:
    app.command("init")(init)


@dataclass
class Written:
    """What ``write_examples`` did, by path relative to the directory."""

    wrote: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def write_examples(directory: Path) -> Written:
    """Write every packaged example file under ``directory`` (created if missing) that is not there
    yet; a file already there is kept, byte for byte. Raises ``NotADirectoryError`` when
    ``directory`` (or a folder on the way to one of its files) is a file."""
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    done = Written()
    for relative, source in example_files():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with target.open("xb") as out:  # exclusive: never replaces a file, even one made meanwhile
                out.write(source.read_bytes())
        except FileExistsError:
            done.kept.append(relative)
        else:
            done.wrote.append(relative)
    return done


def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the working directory (made if missing).")] = Path(
        "."
    ),
) -> None:
    """Write a working directory (config/, templates/, systemd/) from the packaged examples; files
    that exist are kept, never overwritten. Then, there: topslot validate, topslot demo."""
    try:
        done = write_examples(directory)
    except (NotADirectoryError, FileExistsError, PermissionError) as exc:
        say(f"topslot init: {directory}: cannot write there: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    for relative in done.wrote:
        say(f"wrote {directory / relative}")
    for relative in done.kept:
        say(f"kept  {directory / relative} (it exists)")
    where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory} && "
    say(f"{len(done.wrote)} file(s) written, {len(done.kept)} kept. Next: {where}topslot validate && topslot demo")
