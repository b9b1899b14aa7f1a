"""Per-file loaders for the campaign-loader tests. Module-level: the loader's child imports them by name."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from topslot.config.campaigns import FileLoad
from topslot.runtime.campaign_loader import load_with_compile_check
from topslot.settings import Settings


def slow_on_hang(path: Path, templates_dir: Path, env: Any, settings: Settings) -> FileLoad:
    """Like the real loader, but a file whose name starts with ``hang`` never finishes."""
    if path.name.startswith("hang"):
        time.sleep(3600)
    return load_with_compile_check(path, templates_dir, env, settings)


def dies_on_crash(path: Path, templates_dir: Path, env: Any, settings: Settings) -> FileLoad:
    """Like the real loader, but a file whose name starts with ``crash`` kills the process."""
    if path.name.startswith("crash"):
        os._exit(3)
    return load_with_compile_check(path, templates_dir, env, settings)
