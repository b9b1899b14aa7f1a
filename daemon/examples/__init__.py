"""The examples carried by the package: the repository's own ``config/`` (settings, the example
campaign, example contacts and events), ``templates/`` and ``systemd/``, mapped into the wheel as
``topslot/examples/config``, ``templates`` and ``systemd`` (pyproject.toml's package-dir), so an
installed topslot can write a working directory (``topslot init``) and run its tour anywhere. From a
clone (or an editable install) they are read where they are: the repository's top-level folders.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

PARTS = ("config", "templates", "systemd")  # each becomes the same-named folder of a working directory


def example_files() -> Iterator[tuple[str, Traversable]]:
    """Every packaged example file as (its path in a working directory, e.g. ``config/topslot.yaml``;
    the packaged file), sorted by path."""
    found: list[tuple[str, Traversable]] = []
    for part in PARTS:
        found.extend(_walk(_folder(part), part))
    return iter(sorted(found, key=lambda item: item[0]))


def _folder(part: str) -> Traversable:
    """The packaged folder (a wheel), else the repository's own (a clone or an editable install)."""
    packaged = files(__name__) / part
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / part


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for entry in folder.iterdir():
        if entry.name.startswith((".", "__")):
            continue
        path = f"{prefix}/{entry.name}"
        if entry.is_dir():
            yield from _walk(entry, path)
        else:
            yield path, entry
