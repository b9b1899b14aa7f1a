"""Health: degraded from the first refused database step until every step that failed works again."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from topslot.health import Health

FULL = OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))


def test_degraded_until_every_failing_step_works_again_logged_once_each_way() -> None:
    now = [100.0]
    health = Health(monotonic=lambda: now[0])
    told: list[str] = []
    health.listeners.append(told.append)
    with capture_logs() as logs:
        health.database_ok("bucket")  # nothing wrong: nothing said
        health.database_failed("bucket", FULL)
        now[0] = 102.5
        health.database_failed("record outcomes", FULL)
        health.database_ok("record outcomes")  # updates work again, the bucket's inserts not yet
        assert health.status == "degraded"
        assert health.as_dict() == {
            "status": "degraded",
            "database": {
                "degraded_for_s": 2.5,
                "where": "record outcomes",
                "error": "OperationalError: database or disk is full",
            },
        }
        now[0] = 104.0
        health.database_ok("bucket")
    assert health.status == "ok" and health.as_dict() == {"status": "ok"}
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("database_degraded", "warning"),
        ("database_recovered", "info"),
    ]
    assert logs[0]["where"] == "bucket" and logs[1]["after_s"] == 4.0
    assert told == ["degraded: the database refuses work (OperationalError: database or disk is full)", "ok"]
