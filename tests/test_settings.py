from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from topslot.errors import InvalidInput
from topslot.settings import Settings, load_settings, resolve_sqlite_url

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
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K1", "signing-key-one-0123")

    s = load_settings(cfg, default_country="CN")

    assert s.default_country == "CN"  # init kwargs beat the environment
    assert s.default_timezone == "Europe/Berlin"  # only in YAML
    assert s.tracking_port == 2222  # secret file beats YAML
    server = s.smtp["primary"]
    assert (server.host, server.port, server.username) == ("mail.example.com", 2525, "news")  # env merged into YAML
    assert server.password is not None and server.password.get_secret_value() == "from-file-pw"
    assert s.signing_keys["k1"].get_secret_value() == "signing-key-one-0123"
    assert sorted(s.secret_values()) == ["from-file-pw", "signing-key-one-0123"]
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
        (
            f"{p}:10:3: 'signing_keys.k1' is a secret and must not be in topslot.yaml; "
            "set TOPSLOT_SIGNING_KEYS__K1 (environment) or a credential file named signing_keys__k1"
        ),
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
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K1", "abcdefgh-abcdefgh")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    yaml_path = tmp_path / "cfg" / "topslot.yaml"
    assert str(caught.value) == f"{yaml_path}:1:1: signing_key_id 'k9' is not one of the signing keys (k1)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///var/t.db", "sqlite+aiosqlite:///{base}/var/t.db"),
        ("sqlite+aiosqlite:////abs/t.db", "sqlite+aiosqlite:////abs/t.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("sqlite+aiosqlite:///t.db?timeout=5", "sqlite+aiosqlite:///{base}/t.db?timeout=5"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///file:t.db?mode=ro&uri=true", "sqlite:///file:t.db?mode=ro&uri=true"),  # a URI, kept
    ],
)
def test_relative_sqlite_paths_are_made_absolute(tmp_path: Path, url: str, expected: str) -> None:
    assert resolve_sqlite_url(url, tmp_path) == expected.format(base=tmp_path)


def test_settings_object_is_frozen(tmp_path: Path) -> None:
    s = Settings(config_dir=tmp_path)
    with pytest.raises(ValidationError, match="frozen"):
        s.database_url = "x"  # type: ignore[misc]


# ---------------------------------------------------------------- secrets in topslot.yaml name their own variable

SECRET_REFUSAL = re.compile(r"set (?P<env>TOPSLOT_\S+) \(environment\) or a credential file named (?P<file>\S+)")


def refusal(tmp_path: Path, text: str) -> tuple[str, str, str]:
    """(the problem line, the variable it names, the credential file it names) for ``text`` in topslot.yaml."""
    write_yaml(tmp_path / "cfg", text)
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    (line,) = [line for line in str(caught.value).splitlines() if "is a secret" in line]
    found = SECRET_REFUSAL.search(line)
    assert found is not None, line
    return line, found["env"], found["file"]


@pytest.mark.parametrize("how", ["environment", "credential file"])
def test_a_signing_key_in_yaml_names_the_variable_that_really_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    line, env, file = refusal(tmp_path, "signing_key_id: k9\nsigning_keys:\n  k9: a-signing-key-in-the-wrong-place\n")

    assert line.startswith(f"{tmp_path / 'cfg' / 'topslot.yaml'}:3:3: 'signing_keys.k9' is a secret")
    assert (env, file) == ("TOPSLOT_SIGNING_KEYS__K9", "signing_keys__k9")
    assert "a-signing-key-in-the-wrong-place" not in line

    write_yaml(tmp_path / "cfg", "signing_key_id: k9\n")  # moved out of the file, to where the message said
    if how == "environment":
        monkeypatch.setenv(env, "a-signing-key-in-the-right-place")
    else:
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / file).write_text("a-signing-key-in-the-right-place\n", encoding="utf-8")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings(tmp_path / "cfg")
    assert s.signing_keys["k9"].get_secret_value() == "a-signing-key-in-the-right-place"


def test_a_mixed_case_server_name_still_gets_a_working_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variable and file names are case-insensitive, so server names are too: ``Primary`` is ``primary``."""
    _, env, file = refusal(tmp_path, "smtp:\n  Primary:\n    host: mail.example.com\n    password: pw-in-yaml\n")
    assert (env, file) == ("TOPSLOT_SMTP__PRIMARY__PASSWORD", "smtp__primary__password")

    write_yaml(tmp_path / "cfg", "smtp:\n  Primary:\n    host: mail.example.com\n")
    monkeypatch.setenv(env, "pw-from-env")
    s = load_settings(tmp_path / "cfg")
    assert list(s.smtp) == ["primary"]  # one server, not "Primary" plus an env-only "primary"
    assert s.smtp["primary"].host == "mail.example.com"
    assert s.smtp["primary"].password is not None and s.smtp["primary"].password.get_secret_value() == "pw-from-env"


def test_names_differing_only_in_case_are_duplicates(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "cfg", "smtp:\n  Relay: {host: a.example}\n  relay: {host: b.example}\n"
    )
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value) == f"{path}:3:3: duplicate key 'relay' (names are case-insensitive)"


def test_a_map_of_secrets_written_as_one_value_names_the_per_key_variables(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "cfg", "signing_keys: one-key-for-everything\n")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value) == (
        f"{path}:1:1: 'signing_keys' is a secret and must not be in topslot.yaml; set one per key: "
        "TOPSLOT_SIGNING_KEYS__<ID> (environment) or a credential file named signing_keys__<id> "
        "(in $CREDENTIALS_DIRECTORY or $TOPSLOT_SECRETS_DIR)"
    )


# ---------------------------------------------------------------- signing keys are checked with the settings


def test_a_short_signing_key_is_a_settings_problem_located_at_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K9", "tiny-key")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value).startswith(
        "TOPSLOT_SIGNING_KEYS__K9:0:0: signing_keys.k9: the signing key is shorter than 16 bytes; use e.g. "
    )
    assert "tiny-key" not in str(caught.value)


def test_a_short_signing_key_in_a_credential_file_is_located_at_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "TOPSLOT_SIGNING_KEYS__K9").write_text("tiny-key\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    file = creds / "TOPSLOT_SIGNING_KEYS__K9"
    assert str(caught.value).startswith(f"{file}:0:0: signing_keys.k9: the signing key is shorter")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TOPSLOT_SIGNING_KEYS__THIRTEEN-CHAR": "x" * 20},
            "TOPSLOT_SIGNING_KEYS__THIRTEEN-CHAR:0:0: signing_keys.thirteen-char: signing key id 'thirteen-char' "
            "must be 1-12 characters of a-z, 0-9, _ and -",
        ),
        (
            {"TOPSLOT_SIGNING_KEYS__A": "x" * 20, "TOPSLOT_SIGNING_KEYS__B": "y" * 20},
            "TOPSLOT_SIGNING_KEY_ID:0:0: signing_key_id: several signing keys (a, b): set signing_key_id "
            "(TOPSLOT_SIGNING_KEY_ID) to the one that signs new links",
        ),
    ],
    ids=["bad id", "several keys, none chosen"],
)
def test_signing_keys_the_keyring_would_refuse_are_settings_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value) == message


def test_valid_signing_keys_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K2026", "k" * 16)  # exactly the minimum
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K2025", "o" * 40)
    monkeypatch.setenv("TOPSLOT_SIGNING_KEY_ID", "K2026")
    s = load_settings(tmp_path / "cfg")
    assert s.signing_key_id == "k2026" and sorted(s.signing_keys) == ["k2025", "k2026"]


# ---------------------------------------------------------------- the database URL


@pytest.mark.parametrize(
    "url", ["mysql://u:pw-not-shown@h/db", "not a url", "postgresql://u:pw-not-shown@h:port/db"]
)
def test_a_database_url_topslot_cannot_use_is_a_settings_problem(tmp_path: Path, url: str) -> None:
    path = write_yaml(tmp_path / "cfg", f"database_url: '{url}'\n")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value).startswith(f"{path}:1:1: database_url: not a database URL topslot can use")
    assert "pw-not-shown" not in str(caught.value)


def test_an_alias_bomb_in_topslot_yaml_is_one_problem_not_a_hang(tmp_path: Path) -> None:
    from test_yaml_source import alias_bomb

    (tmp_path / "topslot.yaml").write_text("default_timezone: UTC\n" + alias_bomb())

    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path)

    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (6, 45) and "the alias *a3" in problem.message


def test_topslot_yaml_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "topslot.yaml").write_bytes("default_timezone: UTC\ncompliance: {postal_address: caf\xe9}\n".encode("latin-1"))

    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path)

    (problem,) = caught.value.problems
    assert problem.line == 2 and "not UTF-8" in problem.message


def test_twilio_needs_a_sender_for_its_help_answer(tmp_path: Path) -> None:
    twilio = {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32, "from_number": "+15005550006"}
    with pytest.raises(ValidationError, match="compliance.sender_identity is empty"):
        Settings(config_dir=tmp_path, twilio=twilio)
    assert Settings(config_dir=tmp_path, twilio=twilio, compliance={"sender_identity": "Example Shop"}).twilio.configured
    assert Settings(config_dir=tmp_path, twilio={**twilio, "help_text": "Shop news. Reply STOP to opt out."})


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("postgresql+asyncpg://u:pw-in-url@h/db", ["pw-in-url"]),
        ("postgresql+asyncpg://u:p%40ss-word@h/db", ["p%40ss-word", "p@ss-word"]),  # as written and as meant
        ("postgresql+asyncpg://u@h/db?password=pw-in-query&sslmode=require", ["pw-in-query"]),
        ("postgresql+asyncpg://u@h/db", []),
        ("sqlite+aiosqlite:///var/t.db", []),
    ],
)
def test_the_database_password_is_a_secret_value(tmp_path: Path, url: str, secrets: list[str]) -> None:
    """So that the log scrubber redacts it wherever it appears."""
    assert sorted(Settings(config_dir=tmp_path, database_url=url).secret_values()) == secrets


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///var/t.db?timeout=5", "{base}/var/t.db"),
        ("sqlite+aiosqlite:///:memory:", None),
        ("sqlite+aiosqlite:///file:shared?mode=memory&uri=true", None),  # a URI database: not a file here
        ("postgresql+asyncpg://u@h/db", None),
    ],
)
def test_sqlite_path_is_the_file_the_store_opens(tmp_path: Path, url: str, expected: str | None) -> None:
    from topslot.store.db import sqlite_database_file

    s = Settings(config_dir=tmp_path, database_url=url)
    assert s.sqlite_path == (Path(expected.format(base=tmp_path)) if expected else None)
    assert s.sqlite_path == sqlite_database_file(s.database_url)


# ---------------------------------------------------------------- files that cannot be read


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("pässwörd\n".encode("latin-1"), "twilio.auth_token: the credential file is not UTF-8 text; save it as UTF-8"),
        (b"k" * (64 * 1024 + 1), "twilio.auth_token: the credential file is larger than 64 KiB; is it the right file?"),
    ],
    ids=["not utf-8", "too large"],
)
def test_a_credential_file_that_cannot_be_used_is_a_problem_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio__auth_token").write_bytes(content)
    (creds / "smtp__primary__password").write_text("good-password\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))

    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")

    assert str(caught.value) == f"{creds / 'twilio__auth_token'}:0:0: {message}"
    (creds / "twilio__auth_token").write_text("a-token\n", encoding="utf-8")
    s = load_settings(tmp_path / "cfg")
    assert s.twilio.auth_token is not None and s.smtp["primary"].password is not None


def test_a_credential_file_of_no_setting_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "some-other-service.key").write_bytes(b"\xff" * (1024 * 1024))  # a credentials dir holds other things
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_settings(tmp_path / "cfg").secret_values() == []


def test_topslot_yaml_that_cannot_be_read_is_one_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "cfg", "default_timezone: UTC\n")
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", refuse)  # root reads any file: refuse it this way
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value) == f"{path}:1:1: cannot read the file: Permission denied"


# ---------------------------------------------------------------- checks across sections, each at its setting


def test_im_provider_problems_are_each_located_at_their_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bad provider is reported (not only the first), at ``im.<name>`` in topslot.yaml, and a
    missing secret names the variable and credential file that really load it."""
    path = write_yaml(
        tmp_path / "cfg",
        "im:\n"
        "  tg: {kind: telegram}\n"
        "  wa: {kind: whatsapp, from_number: '+15005550006'}\n"
        "  hook: {kind: webhook, url: 'https://gw.example/topslot'}\n"
        "  ok: {kind: webhook, url: 'https://gw.example/topslot'}\n",
    )
    monkeypatch.setenv("TOPSLOT_IM__OK__SECRET", "s" * 16)
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value).splitlines() == [
        f"{path}:2:3: im.tg.token: a telegram provider needs its bot token: set TOPSLOT_IM__TG__TOKEN "
        "(environment) or a credential file named im__tg__token (in $CREDENTIALS_DIRECTORY or $TOPSLOT_SECRETS_DIR)",
        f"{path}:3:3: im.wa sends WhatsApp through Twilio: configure twilio (account_sid, auth_token)",
        f"{path}:4:3: im.hook.secret: a webhook provider needs its signing secret: set TOPSLOT_IM__HOOK__SECRET "
        "(environment) or a credential file named im__hook__secret (in $CREDENTIALS_DIRECTORY or $TOPSLOT_SECRETS_DIR)",
    ]

    creds = tmp_path / "creds"  # where the message said
    creds.mkdir()
    (creds / "im__tg__token").write_text("123:bot-token\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("TOPSLOT_IM__HOOK__SECRET", "h" * 16)
    write_yaml(tmp_path / "cfg", path.read_text().replace("  wa: {kind: whatsapp, from_number: '+15005550006'}\n", ""))
    s = load_settings(tmp_path / "cfg")
    assert sorted(s.im) == ["hook", "ok", "tg"]


def test_a_bad_provider_name_is_located_at_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "cfg", "im:\n  ok: {kind: telegram}\n  We-Com: {kind: webhook, url: 'https://gw.example'}\n")
    monkeypatch.setenv("TOPSLOT_IM__OK__TOKEN", "123:bot-token")
    monkeypatch.setenv("TOPSLOT_IM__WE-COM__SECRET", "s" * 16)
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value) == (
        f"{path}:3:3: im.we-com: 'we-com' is not an IM provider name: use 1-20 of a-z, 0-9 and _, starting with "
        "a letter (it is also the contacts' im_<name> column)"
    )


def test_the_help_answer_problem_is_located_at_the_sender_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPSLOT_TWILIO__AUTH_TOKEN", "t" * 32)
    twilio = "twilio: {account_sid: AC00000000000000000000000000000000, from_number: '+15005550006'}\n"
    path = write_yaml(tmp_path / "cfg", twilio + "compliance:\n  postal_address: 1 Example Road\n")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")
    assert str(caught.value).startswith(
        f"{path}:2:1: compliance.sender_identity is empty but twilio.help_text says {{sender}}: set it"
    )
    write_yaml(tmp_path / "cfg", twilio)
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path / "cfg")  # no compliance section: at the variable to set
    assert str(caught.value).startswith("TOPSLOT_COMPLIANCE__SENDER_IDENTITY:0:0: compliance.sender_identity is empty")


def test_phone_numbers_and_sids_are_checked_the_same_in_both_places(tmp_path: Path) -> None:
    twilio = {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32}
    sender = {"from_number": "+15005550006"}
    for bad in ({"from_number": "+0123"}, {"messaging_service_sid": "MGnothex"}):
        with pytest.raises(ValidationError, match="String should match pattern"):
            Settings(config_dir=tmp_path, twilio={**twilio, **bad})
        with pytest.raises(ValidationError, match="String should match pattern"):
            Settings(config_dir=tmp_path, twilio={**twilio, **sender}, im={"wa": {"kind": "whatsapp", **bad}})


def test_redis_url_is_checked_and_its_password_never_logged(tmp_path: Path) -> None:
    s = Settings(config_dir=tmp_path, redis_url="redis://:limits-pw@127.0.0.1:6379/0")
    assert s.redis_url and "limits-pw" in s.secret_values() and s.redis_key_prefix == "topslot"
    with pytest.raises(ValidationError, match="redis_url"):
        Settings(config_dir=tmp_path, redis_url="127.0.0.1:6379")  # not a URL
    with pytest.raises(ValidationError, match="redis_key_prefix"):
        Settings(config_dir=tmp_path, redis_key_prefix="has space")


def test_a_redis_url_without_the_redis_package_is_one_clear_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    (tmp_path / "topslot.yaml").write_text("redis_url: redis://127.0.0.1:6379/0\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path)
    (problem,) = caught.value.problems
    assert problem.line == 1 and "pip install 'topslot[redis]'" in problem.message
