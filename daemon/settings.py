"""Process settings: ``config/topslot.yaml``, overridden by ``TOPSLOT_*`` environment variables.

INTERFACE STUB — the runtime owner fleshes this out (YAML source, env overrides, secrets from
env/credential files). Other modules rely only on ``load_settings`` and the attribute names below.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class Settings(BaseModel):
    config_dir: Path = Path("config")
    templates_dir: Path = Path("templates")
    var_dir: Path = Path("var")
    database_url: str = "sqlite+aiosqlite:///var/topslot.db"
    default_timezone: str = "UTC"
    default_country: str = "US"
    tracking_base_url: str = "http://127.0.0.1:8080"


def load_settings(config_dir: Path | str = "config") -> Settings:
    return Settings(config_dir=Path(config_dir))
