"""A throwaway config directory for CLI tests: the shipped campaigns, SQLite in tmp_path."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_support import REPO  # noqa: E402


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
