"""What the four import commands share: the ``--encoding`` option, and checking the file (and the
encoding against it) before anything is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from topslot.cli.common import print_problems, say
from topslot.errors import InvalidInput
from topslot.imports.lines import resolve_encoding

EncodingOption = Annotated[
    str | None,
    typer.Option(
        "--encoding",
        metavar="NAME",
        help="The file's text encoding, e.g. gb18030 or utf-16 (default: UTF-8, or what a byte-order mark says).",
    ),
]


def import_file_or_exit(path: Path, encoding: str | None) -> str:
    """The codec to read the import file ``path`` with, checked before anything is imported: no such
    file, a file that cannot be read, an unknown ``--encoding``, or a file that is clearly not UTF-8
    without one, is ONE line on stderr and exit 2."""
    if not path.is_file():
        say(f"{path}: no such file")
        raise typer.Exit(2)
    try:
        with path.open("rb"):  # readable? (resolve_encoding opens it only without --encoding)
            pass
        return resolve_encoding(path, encoding)
    except OSError as exc:
        say(f"{path}: cannot be read: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    except ValueError as exc:
        say(f"--encoding: {exc}")
        raise typer.Exit(2) from None
    except InvalidInput as exc:
        print_problems(exc.problems)
        raise typer.Exit(2) from None
