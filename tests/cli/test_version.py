"""``topslot --version`` names the installed version and runs nothing else."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from topslot import __version__
from topslot.cli import app


def test_version_prints_the_package_version_and_exits_zero() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"topslot {__version__}"
    assert __version__ == version("topslot")
