"""Running ``topslot`` in-process for CLI tests, reading the SQLite ledger it wrote, and what the
hostile-input tests of the import commands share."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from topslot.cli import app
from topslot.store.db import open_engine

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "example"

TEN_MB = 10 * 1024 * 1024  # a field far over every importer's line limit
NOT_UTF8 = "the line is not valid UTF-8; if the file is in another encoding, re-run with --encoding NAME"


def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``topslot ARGS`` (``stdin``: its standard input); unexpected
    exceptions propagate."""
    result = CliRunner().invoke(app, list(args), input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def topslot(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m topslot ARGS`` as a real process (so a traceback would really show), with no
    TOPSLOT_* setting from outside (``env`` adds some)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOPSLOT_")}
    return subprocess.run(
        [sys.executable, "-m", "topslot", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def db_rows(db: Path, query: Any) -> list[Any]:
    """The rows of ``query`` (a SQLAlchemy select or ``text``) in the SQLite file ``db``."""

    async def read() -> list[Any]:
        engine = open_engine(f"sqlite+aiosqlite:///{db}")
        try:
            async with engine.connect() as conn:
                return list(await conn.execute(query))
        finally:
            await engine.dispose()

    return asyncio.run(read())
