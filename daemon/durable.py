"""Durable files: what makes a file's existence survive a power loss, for the places that need it
(the Maildir outbox's deliveries, the hand-over journal)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Sync ``directory`` itself: the names created or linked in it are on disk once this returns
    (a file's own fsync covers its contents, not its name)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
