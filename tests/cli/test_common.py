"""Bad input to every command that opens the database or reads settings: one clear line on stderr,
a non-zero exit, no traceback (``daemon/cli/common.py``: ``settings_or_exit``, ``with_engine``).

Real databases only: PostgreSQL on a TCP port nobody listens on, SQLite paths that do not or cannot
exist, an empty SQLite file, a real PostgreSQL server asked for a database it does not have.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import pytest
from cli_support import EXAMPLE, run, topslot

SETTING = "(setting database_url / TOPSLOT_DATABASE_URL)"
CAMPAIGN = "mothers-day-2027"
PG_PASSWORD = "s3cret-pw-never-shown"

HOW_TO_GET_ONE = "--config or TOPSLOT_CONFIG_DIR; `topslot init` writes a working one"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TOPSLOT_* settings leak in from outside; the working directory is a scratch directory."""
    for name in list(os.environ):
        if name.upper().startswith("TOPSLOT_") and name != "TOPSLOT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_database(config_dir: Path, url: str) -> Path:
    """Point the fixture's topslot.yaml at ``url`` instead of its SQLite file."""
    path = config_dir / "topslot.yaml"
    text = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([f"database_url: {url}", *text[1:]]) + "\n", encoding="utf-8")
    return config_dir


def pool_file(tmp_path: Path) -> Path:
    codes = tmp_path / "codes.txt"
    codes.write_text("CODE0001\nCODE0002\n", encoding="utf-8")
    return codes


# Every command that opens the database, with its arguments (the CLI fixture's campaigns).
READ_ONLY = {
    "report": ("report", CAMPAIGN),
    "deliveries status": ("deliveries", "status", CAMPAIGN),
    "plan": ("plan", CAMPAIGN, "--from", "2027-05-01T00:00Z"),
    "audience": ("audience", CAMPAIGN),
    "coupons stock": ("coupons", "stock", "p"),
    "coupons verify": ("coupons", "verify", "DAD0001", "--campaign", "fathers-day-2027"),
    "preview": ("preview", CAMPAIGN, "C000001", "--channel", "sms"),
}
WRITING = {
    "db upgrade": ("db", "upgrade"),
    "deliveries retry": ("deliveries", "retry", CAMPAIGN),
    "contacts import": ("contacts", "import", str(EXAMPLE / "contacts.csv")),
    "events import": ("events", "import", str(EXAMPLE / "events.csv")),
}


@pytest.fixture
def pooled_config(config_dir: Path) -> Path:
    """The CLI fixture plus a campaign drawing codes from pool ``fathers-day`` (for ``coupons verify``)."""
    shipped = (config_dir / "campaigns" / f"{CAMPAIGN}.yaml").read_text(encoding="utf-8")
    pooled = shipped.replace(f"id: {CAMPAIGN}", "id: fathers-day-2027").replace(
        "coupon: {generate: {prefix: MOM, length: 10}, on_exhausted: pause, expires: 2027-05-20}",
        "coupon: {pool: fathers-day, on_exhausted: skip}",
    )
    assert pooled != shipped
    (config_dir / "campaigns" / "fathers-day-2027.yaml").write_text(pooled, encoding="utf-8")
    with (config_dir / "topslot.yaml").open("a", encoding="utf-8") as settings:  # preview compiles the campaign
        settings.write("compliance: {postal_address: '1 Example Road, Shanghai', sender_identity: Example Shop}\n")
    return config_dir


# ---------------------------------------------------------------- PostgreSQL unreachable


@pytest.mark.parametrize("args", [*READ_ONLY.values(), *WRITING.values()], ids=[*READ_ONLY, *WRITING])
def test_postgresql_on_a_closed_port_is_one_line_exit_1(pooled_config: Path, args: tuple[str, ...]) -> None:
    port = closed_port()
    with_database(pooled_config, f"postgresql+asyncpg://topslot:{PG_PASSWORD}@127.0.0.1:{port}/x")

    code, out, err = run(*args, "--config", str(pooled_config))

    assert code == 1, (out, err)
    url = f"postgresql+asyncpg://topslot:***@127.0.0.1:{port}/x"
    assert err == f"database {url} is unreachable: connection refused {SETTING}\n"
    assert PG_PASSWORD not in out + err


def test_unreachable_database_from_the_environment_in_a_real_process(config_dir: Path, tmp_path: Path) -> None:
    """The variable beats topslot.yaml and the process prints one line, no traceback."""
    port = closed_port()
    url = f"postgresql://ops:{PG_PASSWORD}@127.0.0.1:{port}/topslot"

    done = topslot("db", "upgrade", "--config", str(config_dir), cwd=tmp_path, TOPSLOT_DATABASE_URL=url)

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"database postgresql://ops:***@127.0.0.1:{port}/topslot is unreachable: connection refused {SETTING}"
    ]  # the URL as configured, without its password
    assert PG_PASSWORD not in done.stdout + done.stderr


def test_log_level_debug_adds_the_traceback(config_dir: Path, tmp_path: Path) -> None:
    port = closed_port()
    url = f"postgresql+asyncpg://ops@127.0.0.1:{port}/topslot"

    done = topslot(
        "db", "upgrade", "--config", str(config_dir), cwd=tmp_path, TOPSLOT_DATABASE_URL=url, TOPSLOT_LOG_LEVEL="debug"
    )

    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "ConnectionRefusedError" in done.stderr
    assert done.stderr.splitlines()[-1].endswith(f"is unreachable: connection refused {SETTING}")


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_one_line(config_dir: Path, pg_test_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(pg_test_url).set(database="topslot_no_such_database")
    with_database(config_dir, url.render_as_string(hide_password=False))

    code, _, err = run("report", CAMPAIGN, "--config", str(config_dir))

    assert code == 1
    assert err.startswith(f"database {url.render_as_string(hide_password=True)} cannot be used: ")
    assert 'database "topslot_no_such_database" does not exist' in err and err.count("\n") == 1


# ---------------------------------------------------------------- SQLite that cannot be opened


@pytest.mark.parametrize("args", [WRITING["db upgrade"], WRITING["contacts import"]], ids=["db upgrade", "import"])
def test_sqlite_under_a_regular_file_cannot_be_opened(config_dir: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be\n", encoding="utf-8")
    db = blocker / "var" / "topslot.db"
    with_database(config_dir, f"sqlite+aiosqlite:///{db}")

    code, _, err = run(*args, "--config", str(config_dir))

    assert code == 1
    assert err == f"database file {db} cannot be opened: {blocker} is not a directory {SETTING}\n"


def test_sqlite_path_that_is_a_directory_cannot_be_opened(config_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a-dir.db").mkdir()
    with_database(config_dir, f"sqlite+aiosqlite:///{tmp_path / 'a-dir.db'}")

    code, _, err = run("report", CAMPAIGN, "--config", str(config_dir))
    assert (code, err) == (1, f"database file {tmp_path / 'a-dir.db'} is a directory, not a file {SETTING}\n")
    code, _, err = run("db", "upgrade", "--config", str(config_dir))
    assert (code, err) == (1, f"database file {tmp_path / 'a-dir.db'} cannot be opened: it is a directory {SETTING}\n")


# ---------------------------------------------------------------- read-only commands never create a database


@pytest.mark.parametrize("args", READ_ONLY.values(), ids=READ_ONLY)
def test_read_only_commands_never_create_a_missing_sqlite_database(
    pooled_config: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    db = tmp_path / "typo" / "topslot.db"
    with_database(pooled_config, f"sqlite+aiosqlite:///{db}")

    code, out, err = run(*args, "--config", str(pooled_config))

    assert code == 1, (out, err)
    assert err == (
        f"database file {db} does not exist (nor does its directory {db.parent}) {SETTING}; "
        "topslot db upgrade creates it\n"
    )
    assert not db.parent.exists()


def test_a_missing_file_in_an_existing_directory_is_named(config_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "topslot-typo.db"
    with_database(config_dir, f"sqlite+aiosqlite:///{db}")

    code, _, err = run("report", CAMPAIGN, "--config", str(config_dir))

    assert (code, err) == (1, f"database file {db} does not exist {SETTING}; topslot db upgrade creates it\n")
    assert not db.exists()


@pytest.mark.parametrize("args", WRITING.values(), ids=WRITING)
def test_writing_commands_still_create_the_database(config_dir: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    db = tmp_path / "new" / "dir" / "topslot.db"
    with_database(config_dir, f"sqlite+aiosqlite:///{db}")
    if args[0] == "events":  # no contacts yet: import the header only (every example event would be refused)
        header = tmp_path / "events.csv"
        header.write_text((EXAMPLE / "events.csv").read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        args = (*args[:-1], str(header))

    code, out, err = run(*args, "--config", str(config_dir))

    assert code == 0, (out, err)
    assert db.is_file()


def test_read_only_commands_do_not_migrate_an_empty_database(config_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()  # an empty SQLite file: no tables, no schema version
    with_database(config_dir, f"sqlite+aiosqlite:///{db}")

    code, _, err = run("deliveries", "status", CAMPAIGN, "--config", str(config_dir))

    assert code == 1
    assert err == (
        f"database file {db} has no topslot tables: run topslot db upgrade "
        f"(or check setting database_url / TOPSLOT_DATABASE_URL)\n"
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from sqlite_master").fetchone() == (0,)  # still nothing


def test_read_only_commands_refuse_a_schema_they_do_not_know(config_dir: Path) -> None:
    assert run("db", "upgrade", "--config", str(config_dir))[0] == 0
    db = config_dir.parent / "var" / "topslot.db"
    with sqlite3.connect(db) as conn:
        conn.execute("update alembic_version set version_num = '9999'")

    code, _, err = run("report", CAMPAIGN, "--config", str(config_dir))

    assert code == 1
    assert err.startswith(f"database file {db} has schema revision 9999, which this topslot")
    assert "newer" in err and err.count("\n") == 1


def test_read_only_commands_work_on_a_current_database(config_dir: Path) -> None:
    assert run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config_dir))[0] == 0
    code, out, err = run("audience", CAMPAIGN, "--config", str(config_dir), "--at", "2027-05-06T00:00:00Z")
    assert code == 0, err
    assert "contacts in the segment" in out


# ---------------------------------------------------------------- a missing configuration directory


@pytest.mark.parametrize(
    "args",
    [*READ_ONLY.values(), *WRITING.values(), ("coupons", "verify", "MOM123")],
    ids=[*READ_ONLY, *WRITING, "coupons verify (all)"],
)
def test_a_missing_config_directory_is_named_and_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = tmp_path / "no-such-config"

    code, out, err = run(*args, "--config", str(missing))

    assert code == 2, (out, err)
    assert err == f"configuration directory {missing} does not exist ({HOW_TO_GET_ONE})\n"
    assert list(Path.cwd().iterdir()) == []  # no var/, no database made on the way


def test_a_config_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "topslot.yaml"
    file.write_text("log_level: info\n", encoding="utf-8")

    code, _, err = run("db", "upgrade", "--config", str(file))

    assert (code, err) == (2, f"configuration directory {file} is not a directory ({HOW_TO_GET_ONE})\n")


def test_run_with_a_missing_config_directory_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-config"

    done = topslot("run", "--config", str(missing), cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"configuration directory {missing} does not exist ({HOW_TO_GET_ONE})"
    ]


# ---------------------------------------------------------------- signing keys too short


def test_a_short_signing_key_is_a_settings_problem_for_every_command(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K9", "tiny-key")
    expected = "TOPSLOT_SIGNING_KEYS__K9:0:0: signing_keys.k9: the signing key is shorter than 16 bytes"

    for args in (("deliveries", "status", CAMPAIGN), ("db", "upgrade"), ("coupons", "verify", "MOM1")):
        code, out, err = run(*args, "--config", str(config_dir))
        assert code == 2, (args, out, err)
        assert err.startswith(expected) and err.count("\n") == 1 and "tiny-key" not in out + err


def test_validate_reports_a_short_signing_key_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "campaigns").mkdir(parents=True)

    done = topslot("validate", str(config), cwd=tmp_path, TOPSLOT_SIGNING_KEYS__K9="tiny-key")

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("TOPSLOT_SIGNING_KEYS__K9:0:0: signing_keys.k9: the signing key is shorter than 16")
    assert "tiny-key" not in done.stdout + done.stderr and "ok:" not in done.stderr


def test_run_with_a_short_signing_key_in_a_credential_file_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "campaigns").mkdir(parents=True)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "signing_keys__k9").write_text("tiny-key\n", encoding="utf-8")

    done = topslot("run", "--config", str(config), cwd=tmp_path, CREDENTIALS_DIRECTORY=str(creds))

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[0].startswith(
        f"{creds / 'signing_keys__k9'}:0:0: signing_keys.k9: the signing key is shorter than 16 bytes"
    )
    assert "Traceback" not in done.stderr and "tiny-key" not in done.stderr


# ---------------------------------------------------------------- progress bars (issue 14)


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from topslot.cli import common

    piped = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=piped, force_terminal=False))
    with common.progress_bar("contacts from c.csv") as advance:
        advance(10)
    assert piped.getvalue() == ""  # logs and pipes stay quiet

    tty = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=tty, force_terminal=True, width=100))
    with common.progress_bar("contacts from c.csv") as advance:
        advance(2000)
    assert "contacts from c.csv" in tty.getvalue()
