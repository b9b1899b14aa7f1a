from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.errors import InvalidInput
from daemon.settings import Settings, load_settings, resolve_sqlite_url

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TOPSLOT_* or systemd variables leak in from the outer environment; cwd is a tmp dir."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("TOPSLOT_") or name in ("CREDENTIALS_DIRECTORY",):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_yaml(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "topslot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file_resolve_paths_against_the_working_dir(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "nothing-here")
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path}/var/topslot.db"
    assert s.var_dir == tmp_path / "var"
    assert s.outbox_dir == tmp_path / "var" / "outbox"
    assert s.sqlite_path == tmp_path / "var" / "topslot.db"
    assert s.campaigns_dir == tmp_path / "nothing-here" / "campaigns"
    assert s.log_format == "auto" and s.smtp == {} and s.secret_values() == []


def test_shipped_topslot_yaml_is_valid() -> None:
    s = load_settings(REPO / "config")
    assert s.config_dir == REPO / "config"
    assert s.database_url.startswith("sqlite+aiosqlite:///")


def test_priority_init_over_env_over_secret_files_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cfg"
    write_yaml(
        cfg,
        "default_country: DE\ndefault_timezone: Europe/Berlin\ntracking_port: 1111\n"
        "smtp:\n  primary:\n    host: mail.example.com\n    port: 587\n    username: news\n",
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "smtp__primary__password").write_text("from-file-pw\n")
    (secrets / "TOPSLOT_TRACKING_PORT").write_text("2222")
    (secrets / "unrelated-credential").write_text("ignored")
    monkeypatch.setenv("TOPSLOT_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("TOPSLOT_SMTP__PRIMARY__PORT", "2525")
    monkeypatch.setenv("TOPSLOT_DEFAULT_COUNTRY", "FR")
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K1", "signing-key-one")

    s = load_settings(cfg, default_country="CN")

    assert s.default_country == "CN"  # init kwargs beat the environment
    assert s.default_timezone == "Europe/Berlin"  # only in YAML
    assert s.tracking_port == 2222  # secret file beats YAML
    server = s.smtp["primary"]
    assert (server.host, server.port, server.username) == ("mail.example.com", 2525, "news")  # env merged into YAML
    assert server.password is not None and server.password.get_secret_value() == "from-file-pw"
    assert s.signing_keys["k1"].get_secret_value() == "signing-key-one"
    assert sorted(s.secret_values()) == ["from-file-pw", "signing-key-one"]
    assert "from-file-pw" not in repr(s)


def test_systemd_credentials_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio__auth_token").write_text("tw-token-123")
    (creds / "conversion_webhook_key").write_text("hook-key-456")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings(tmp_path / "cfg")
    assert s.twilio.auth_token is not None and s.twilio.auth_token.get_secret_value() == "tw-token-123"
    assert s.conversion_webhook_key is not None and s.conversion_webhook_key.get_secret_value() == "hook-key-456"


def test_every_problem_is_reported_with_line_and_column(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    path = write_yaml(
        cfg,
        "log_level: loud\n"
        "smtp:\n"
        "  primary:\n"
        "    host: mail.example.com\n"
        "    password: hunter2hunter2\n"
        "    tls: ssl\n"
        "twilio:\n"
        "  auth_token: abcdef\n"
        "signing_keys:\n"
        "  k1: xyz\n"
        "tracking_port: 70000\n"
        "tracking_port: 1\n"
        "default_timezone: Mars/Olympus\n"
        "colour: blue\n",
    )
    with pytest.raises(InvalidInput) as caught:
        load_settings(cfg)
    lines = str(caught.value).splitlines()
    p = str(path)
    expected_starts = [
        f"{p}:1:1: log_level:",
        (
            f"{p}:5:5: 'smtp.primary.password' is a secret and must not be in topslot.yaml; "
            "set TOPSLOT_SMTP__PRIMARY__PASSWORD"
        ),
        f"{p}:6:5: smtp.primary.tls:",
        f"{p}:8:3: 'twilio.auth_token' is a secret and must not be in topslot.yaml; set TOPSLOT_TWILIO__AUTH_TOKEN",
        f"{p}:9:1: 'signing_keys' is a secret",
        f"{p}:11:1: tracking_port: Input should be less than 65536",
        f"{p}:12:1: duplicate key 'tracking_port'",
        f"{p}:13:1: default_timezone: 'Mars/Olympus' is not an IANA time zone",
        f"{p}:14:1: colour: Extra inputs are not permitted",
    ]
    assert len(lines) == len(expected_starts), lines
    for line, start in zip(lines, expected_starts, strict=True):
        assert line.startswith(start), (line, start)
    assert "hunter2hunter2" not in str(caught.value)


def test_environment_errors_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPSLOT_TRACKING_PORT", "not-a-port")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value).startswith("TOPSLOT_TRACKING_PORT:0:0: tracking_port:")


def test_broken_yaml_syntax_is_located(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "cfg", "smtp:\n  primary: [unclosed\n")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value).startswith(f"{path}:3:1: not valid YAML")


def test_signing_key_id_must_name_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_yaml(tmp_path / "cfg", "signing_key_id: k9\n")
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K1", "abcdefgh")
    with pytest.raises(InvalidInput, match="signing_key_id 'k9' is not one of signing_keys"):
        load_settings(tmp_path / "cfg")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///var/t.db", "sqlite+aiosqlite:///{base}/var/t.db"),
        ("sqlite+aiosqlite:////abs/t.db", "sqlite+aiosqlite:////abs/t.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("sqlite+aiosqlite:///t.db?timeout=5", "sqlite+aiosqlite:///{base}/t.db?timeout=5"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_relative_sqlite_paths_are_made_absolute(tmp_path: Path, url: str, expected: str) -> None:
    assert resolve_sqlite_url(url, tmp_path) == expected.format(base=tmp_path)


def test_settings_object_is_frozen(tmp_path: Path) -> None:
    s = Settings(config_dir=tmp_path)
    with pytest.raises(ValidationError, match="frozen"):
        s.database_url = "x"  # type: ignore[misc]
