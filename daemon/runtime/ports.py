"""The daemon's calls into the other layers (config loader, store, planner), in one place.

Imports happen at call time so the daemon's own modules import cleanly on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon.campaign import Campaign
from daemon.errors import Problem

CAMPAIGN_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class CampaignLoad:
    campaigns: dict[str, Campaign]
    problems: list[Problem]
    sources: dict[str, Path]  # campaign id → its file (resolved)
    files: set[Path] = field(default_factory=set)  # campaign files on disk now (resolved)


def campaign_files(campaigns_dir: Path) -> set[Path]:
    if not campaigns_dir.is_dir():
        return set()
    return {p.resolve() for p in campaigns_dir.iterdir() if p.suffix in CAMPAIGN_SUFFIXES and p.is_file()}


def load_campaigns(campaigns_dir: Path, templates_dir: Path) -> CampaignLoad:
    """Load and validate every campaign file (daemon.config does the work)."""
    load = store_or_config_function("daemon.config", "load_campaigns", ("campaigns",))
    files = campaign_files(campaigns_dir)
    result = load(campaigns_dir, templates_dir)
    sources = _sources(result, files)
    return CampaignLoad(dict(result.campaigns), list(result.problems), sources, files)


def store_or_config_function(package: str, name: str, modules: tuple[str, ...]) -> Any:
    """``package.name``, or ``package.<module>.name`` when the package does not re-export it."""
    import importlib

    for module_name in (package, *(f"{package}.{m}" for m in modules)):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, name, None)
        if found is not None:
            return found
    raise ImportError(f"{package} offers no {name}")


def _sources(result: Any, files: set[Path]) -> dict[str, Path]:
    """Which file each campaign came from: the loader's own record if it keeps one, else each file's ``id``."""
    for name in ("sources", "paths", "files"):
        known = getattr(result, name, None)
        if isinstance(known, Mapping) and all(cid in known for cid in result.campaigns):
            return {cid: Path(known[cid]).resolve() for cid in result.campaigns}
    by_id: dict[str, Path] = {}
    for path in sorted(files):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            by_id.setdefault(data["id"], path)
    return {cid: by_id[cid] for cid in result.campaigns if cid in by_id}


async def open_database(url: str) -> Any:
    """Open the engine and bring the schema up to date."""
    import inspect

    open_engine = store_or_config_function("daemon.store", "open_engine", ("db",))
    upgrade = store_or_config_function("daemon.store", "upgrade", ("db",))
    engine = open_engine(url)
    if inspect.isawaitable(engine):
        engine = await engine
    done = upgrade(engine)
    if inspect.isawaitable(done):
        await done
    return engine


async def record_campaigns(engine: Any, campaigns: Mapping[str, Campaign]) -> bool:
    """Store the active campaigns, when the store offers it (False: nothing recorded)."""
    import inspect

    try:
        record = store_or_config_function("daemon.store", "record_campaigns", ("campaigns",))
    except ImportError:
        return False
    done = record(engine, campaigns)
    if inspect.isawaitable(done):
        await done
    return True
