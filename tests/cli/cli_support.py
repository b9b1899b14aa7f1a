"""Running ``topslot`` in-process for CLI tests."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "example"


def run(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``topslot ARGS``; unexpected exceptions propagate."""
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr
