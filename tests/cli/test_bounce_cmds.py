"""``topslot bounces import`` over a Maildir, an mbox file and one message: what it found, recorded
in the database the daemon uses; re-importing changes nothing."""

from __future__ import annotations

import asyncio
import mailbox
import sys
from pathlib import Path

from cli_support import REPO, run

sys.path.insert(0, str(REPO / "tests"))
from bounces.corpus import message  # noqa: E402
from bounces.test_record import seed  # noqa: E402
from sqlalchemy import select  # noqa: E402

from topslot.links.keys import load_keyring  # noqa: E402
from topslot.settings import load_settings  # noqa: E402
from topslot.store.db import open_engine, upgrade  # noqa: E402
from topslot.store.schema import deliveries, suppressions  # noqa: E402


def _prepare(config_dir: Path) -> None:
    async def work() -> None:
        engine = open_engine(load_settings(config_dir).database_url)
        try:
            await upgrade(engine)
            await seed(engine, {1: (1, "mei.lin@example.net", "sent"), 2: (2, "kai@example.org", "sent")})
        finally:
            await engine.dispose()

    asyncio.run(work())


async def _state(config_dir: Path) -> tuple[dict[int, str], dict[str, str]]:
    engine = open_engine(load_settings(config_dir).database_url)
    try:
        async with engine.connect() as conn:
            states = {r.id: r.state for r in await conn.execute(select(deliveries.c.id, deliveries.c.state))}
            listed = {r.address: r.reason for r in await conn.execute(select(suppressions))}
    finally:
        await engine.dispose()
    return states, listed


def test_a_maildir_an_mbox_and_one_message(config_dir: Path, tmp_path: Path) -> None:
    _prepare(config_dir)
    keyring = load_keyring(load_settings(config_dir))  # the daemon's keys: its return paths verify
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(message("postfix-user-unknown", 1, keyring=keyring))
    box.add(message("out-of-office", 1, keyring=keyring))
    box.add(message("forged-bounce", 2, "kai@example.org", keyring=keyring))
    code, out, err = run("bounces", "import", str(tmp_path / "Maildir"), "--config", str(config_dir))
    assert code == 0, err
    assert out.split() == ["auto_reply", "ignored", "1", "hard_bounce", "recorded", "1",
                           "hard_bounce", "unmatched", "1", "total", "3"]  # fmt: skip
    mbox = mailbox.mbox(tmp_path / "complaints.mbox", create=True)
    mbox.add(message("yahoo-arf-complaint", 2, "kai@example.org", keyring=keyring))
    mbox.flush()
    code, out, err = run("bounces", "import", str(tmp_path / "complaints.mbox"), "--config", str(config_dir))
    assert code == 0 and out.split()[:3] == ["complaint", "recorded", "1"], err
    (tmp_path / "one.eml").write_bytes(message("postfix-user-unknown", 1, keyring=keyring))
    code, out, err = run("bounces", "import", str(tmp_path / "one.eml"), "--config", str(config_dir))
    assert code == 0 and out.split()[:3] == ["hard_bounce", "repeat", "1"], err  # imported twice: nothing new
    states, listed = asyncio.run(_state(config_dir))
    assert states == {1: "bounced", 2: "sent"}
    assert listed == {"mei.lin@example.net": "hard_bounce", "kai@example.org": "complaint"}


def test_a_missing_path_or_a_plain_directory_is_one_line(config_dir: Path, tmp_path: Path) -> None:
    code, _, err = run("bounces", "import", str(tmp_path / "nowhere"), "--config", str(config_dir))
    assert code == 2 and err.strip().endswith("nowhere: no such file or directory")
    (tmp_path / "plain").mkdir()
    code, _, err = run("bounces", "import", str(tmp_path / "plain"), "--config", str(config_dir))
    assert code == 2 and "is a directory but not a Maildir" in err and "Traceback" not in err


def test_one_message_on_stdin_as_postfix_pipe_gives_it(config_dir: Path) -> None:
    _prepare(config_dir)
    keyring = load_keyring(load_settings(config_dir))
    dsn = message("exim-user-unknown", 1, keyring=keyring)
    code, out, err = run("bounces", "import", "-", "--config", str(config_dir), stdin=dsn)
    assert code == 0 and out.split()[:3] == ["hard_bounce", "recorded", "1"], err


def test_stdin_with_the_database_away_asks_the_mta_to_retry(config_dir: Path) -> None:
    settings = config_dir / "topslot.yaml"
    settings.write_text(
        settings.read_text().replace("sqlite+aiosqlite:///", "postgresql+asyncpg://nobody@127.0.0.1:9/")
    )
    code, _, err = run("bounces", "import", "-", "--config", str(config_dir), stdin=b"Subject: x\r\n\r\nhi\r\n")
    assert code == 75, err  # EX_TEMPFAIL: Postfix keeps the message
