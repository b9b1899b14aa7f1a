"""A throwaway config directory for CLI tests: the shipped campaigns, SQLite in tmp_path. Every
test starts with logging as a fresh ``topslot`` process has it: commands run in this process
(CliRunner), and one that sets up logging (``cli_logger``) must not decide where the next logs."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).parent))
from cli_support import REPO  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config" / "campaigns", config / "campaigns")
    db = tmp_path / "var" / "topslot.db"
    (config / "topslot.yaml").write_text(
        f"database_url: sqlite+aiosqlite:///{db}\ntemplates_dir: {REPO / 'templates'}\ndefault_country: US\n",
        encoding="utf-8",
    )
    return config
