"""What the four import commands share: the ``--encoding`` option and checking it against the file
before anything is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import print_problems, say
from daemon.errors import InvalidInput
from daemon.imports.lines import resolve_encoding

EncodingOption = Annotated[
    str | None,
    typer.Option(
        "--encoding",
        metavar="NAME",
        help="The file's text encoding, e.g. gb18030 or utf-16 (default: UTF-8, or what a byte-order mark says).",
    ),
]


def encoding_or_exit(path: Path, requested: str | None) -> str:
    """The codec to read ``path`` with; an unknown ``--encoding``, or a file that is clearly not UTF-8
    without one, is ONE line on stderr and exit 2 (nothing is imported)."""
    try:
        return resolve_encoding(path, requested)
    except ValueError as exc:
        say(f"--encoding: {exc}")
        raise typer.Exit(2) from None
    except InvalidInput as exc:
        print_problems(exc.problems)
        raise typer.Exit(2) from None
