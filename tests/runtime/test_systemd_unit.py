"""The shipped unit and env example stay in step with the settings they configure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from topslot.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "topslot.service"


def unit_values(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(key + "=")
    ]


def test_unit_is_a_hardened_notify_service() -> None:
    text = UNIT.read_text()
    for needed in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=topslot",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert needed in text, needed


def test_unit_environment_credentials_and_env_example_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TOPSLOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    for assignment in unit_values("Environment"):
        name, value = assignment.split("=", 1)
        monkeypatch.setenv(name, value.replace("/var/lib/topslot", str(tmp_path)).replace("/etc/topslot", str(tmp_path)))
    for line in (REPO / "systemd" / "topslot.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            monkeypatch.setenv(name, value)
    creds = tmp_path / "credentials"
    creds.mkdir()
    names = [c.split(":", 1)[0] for c in unit_values("LoadCredential")]
    for name in names:
        (creds / name).write_text(f"value-of-{name}\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))

    s = load_settings(REPO / "config")

    assert sorted(s.secret_values()) == sorted(f"value-of-{name}" for name in names)
    assert s.smtp["primary"].password is not None
    assert s.twilio.auth_token is not None and s.conversion_webhook_key is not None
    assert s.signing_key_id == "k1" and "k1" in s.signing_keys
    assert s.log_format == "json" and s.var_dir == tmp_path
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path}/topslot.db"
