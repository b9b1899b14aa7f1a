"""Hostile or half-written campaign files never stall the daemon: start-up, live reload, partial writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from test_yaml_source import alias_bomb

from runtime.daemon_support import WAIT, LogTap, make_daemon, until

MEMORY_GROWTH_LIMIT = 64 * 1024 * 1024  # the bomb expanded would be gigabytes


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_alias_bomb_at_start_up_is_refused_and_the_daemon_starts_with_the_rest(
    workdir: Path, logs: LogTap
) -> None:
    (workdir / "config" / "campaigns" / "bomb.yaml").write_text(alias_bomb())
    before = rss_bytes()
    daemon = make_daemon(workdir, logs, handle_signals=False, watch=False)
    async with asyncio.timeout(WAIT):  # the old loader ran for minutes and grew past 3 GB
        await daemon.start()
    try:
        assert set(daemon.campaigns) == {"spring-2027"}
        (problem,) = [p for p in daemon.problems if p.path.endswith("bomb.yaml")]
        assert (problem.line, problem.column) == (5, 45) and "the alias *a3" in problem.message
        assert rss_bytes() - before < MEMORY_GROWTH_LIMIT
        assert logs.events("daemon_ready")
    finally:
        await daemon.close()


async def test_alias_bomb_dropped_into_a_running_daemon_keeps_the_previous_version(
    workdir: Path, logs: LogTap, campaign_text: Callable[..., str]
) -> None:
    spring = workdir / "config" / "campaigns" / "spring.yaml"
    async with make_daemon(workdir, logs, handle_signals=False, settle_ms=200) as daemon:
        before = rss_bytes()
        spring.write_text(campaign_text("spring-2027") + alias_bomb())
        await until(lambda: any(e["campaign_id"] == "spring-2027" for e in logs.events("campaign_kept_previous")))
        assert daemon.campaigns["spring-2027"].name == "Spring offer"
        problems = [e for e in logs.events("campaign_problem") if e["path"].endswith("spring.yaml")]
        assert problems and "alias bomb" in problems[0]["message"]
        assert rss_bytes() - before < MEMORY_GROWTH_LIMIT
        # and it still reloads normally afterwards
        spring.write_text(campaign_text("spring-2027", "Spring offer, fixed"))
        await until(lambda: daemon.campaigns["spring-2027"].name == "Spring offer, fixed")


async def test_a_file_written_in_several_steps_is_judged_once_whole(
    workdir: Path, logs: LogTap, campaign_text: Callable[..., str]
) -> None:
    spring = workdir / "config" / "campaigns" / "spring.yaml"
    text = campaign_text("spring-2027", "Spring offer, edited")
    async with make_daemon(workdir, logs, handle_signals=False, settle_ms=1000) as daemon:
        with spring.open("w") as f:  # truncate, write half, the rest: as an editor or a slow copy does
            f.flush()
            await asyncio.sleep(0.3)
            f.write(text[: len(text) // 2])
            f.flush()
            await asyncio.sleep(0.3)
            f.write(text[len(text) // 2 :])
        await until(lambda: daemon.campaigns["spring-2027"].name == "Spring offer, edited")
        assert logs.events("campaign_problem") == []
        assert logs.events("campaign_kept_previous") == []
        assert len(logs.events("campaign_updated")) == 1
