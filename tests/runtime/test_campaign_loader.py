"""Campaign files loaded in a child process, each file within a time limit."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.loader_support import dies_on_crash, slow_on_hang
from topslot.runtime import campaign_loader, ports
from topslot.runtime.campaign_loader import CampaignLoader
from topslot.settings import Settings, load_settings


def settings(workdir: Path) -> Settings:
    return load_settings(workdir / "config")


async def test_the_child_loads_what_the_daemon_would_load_in_process(
    workdir: Path, campaign_text: Callable[..., str]
) -> None:
    s = settings(workdir)
    (s.campaigns_dir / "bad.yaml").write_text(campaign_text("bad-one").replace('slots: ["07:30"]', "slots: [7:30]"))
    (s.campaigns_dir / "copy.yaml").write_text(campaign_text("spring-2027"))
    loader = CampaignLoader()
    try:
        isolated = await loader.load(s.campaigns_dir, s.templates_dir, s)
        again = await loader.load(s.campaigns_dir, s.templates_dir, s)  # the same child, reused
    finally:
        await loader.close()
    direct = ports.load_campaigns(s.campaigns_dir, s.templates_dir, s)

    assert isolated == direct == again
    assert set(isolated.campaigns) == {"spring-2027"}
    # copy.yaml sorts first and keeps the id: spring.yaml is the duplicate
    assert {Path(p.path).name for p in isolated.problems} == {"bad.yaml", "spring.yaml"}
    # the duplicate is reported against the second file, where its id is written
    assert any("already used by" in p.message and p.line == 1 for p in isolated.problems)


async def test_a_file_that_never_finishes_is_refused_and_the_others_load(
    workdir: Path, campaign_text: Callable[..., str]
) -> None:
    s = settings(workdir)
    (s.campaigns_dir / "hang.yaml").write_text(campaign_text("hanging"))
    (s.campaigns_dir / "zz-later.yaml").write_text(campaign_text("later-2027"))
    loader = CampaignLoader(file_timeout=1.0, file_loader=slow_on_hang)
    try:
        result = await loader.load(s.campaigns_dir, s.templates_dir, s)
        child = loader._child
    finally:
        await loader.close()

    assert set(result.campaigns) == {"spring-2027", "later-2027"}  # before and after the hanging file
    (problem,) = result.problems
    assert (Path(problem.path).name, problem.line, problem.column) == ("hang.yaml", 1, 1)
    assert problem.message.startswith("loading this file took longer than 1 s, the limit")
    assert child is not None and not child.is_alive()


async def test_a_file_that_kills_the_loader_is_one_problem(workdir: Path, campaign_text: Callable[..., str]) -> None:
    s = settings(workdir)
    (s.campaigns_dir / "crash.yaml").write_text(campaign_text("crashing"))
    loader = CampaignLoader(file_loader=dies_on_crash)
    try:
        result = await loader.load(s.campaigns_dir, s.templates_dir, s)
    finally:
        await loader.close()

    assert set(result.campaigns) == {"spring-2027"}
    (problem,) = result.problems
    assert Path(problem.path).name == "crash.yaml" and "stopped the loader" in problem.message


async def test_cancelling_a_load_kills_the_child_at_once(workdir: Path, campaign_text: Callable[..., str]) -> None:
    s = settings(workdir)
    (s.campaigns_dir / "hang.yaml").write_text(campaign_text("hanging"))
    loader = CampaignLoader(file_timeout=3600, file_loader=slow_on_hang)
    task = asyncio.create_task(loader.load(s.campaigns_dir, s.templates_dir, s))
    while loader._child is None:
        await asyncio.sleep(0.01)
    child = loader._child
    await asyncio.sleep(0.3)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await asyncio.to_thread(child.join, 10)

    assert not child.is_alive() and child.exitcode == -9
    assert loader._child is None
    await loader.close()


async def test_the_child_is_not_the_daemon(workdir: Path) -> None:
    s = settings(workdir)
    loader = CampaignLoader()
    try:
        await loader.load(s.campaigns_dir, s.templates_dir, s)
        assert loader._child is not None and loader._child.pid != os.getpid()
    finally:
        await loader.close()


class SlowToStart:
    """The loader's process context, but making a child's pipe takes ``delay`` seconds (as the first
    start of the forkserver does, importing topslot: ~0.6 s)."""

    def __init__(self, real: Any, delay: float):
        self.real, self.delay = real, delay
        self.blocked: tuple[float, float] | None = None  # when the slow start began and ended

    def Pipe(self) -> Any:  # noqa: N802 - multiprocessing's name
        began = time.monotonic()
        time.sleep(self.delay)
        self.blocked = (began, time.monotonic())
        return self.real.Pipe()

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        return self.real.Process(*args, **kwargs)


async def test_starting_the_child_does_not_block_the_event_loop(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(workdir)
    slow = SlowToStart(campaign_loader.forkserver(), 0.6)
    monkeypatch.setattr(campaign_loader, "forkserver", lambda: slow)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)  # ticking
    loader = CampaignLoader()
    try:
        result = await loader.load(s.campaigns_dir, s.templates_dir, s)
    finally:
        ticker.cancel()
        await loader.close()
    assert set(result.campaigns) == {"spring-2027"}
    assert slow.blocked is not None
    began, ended = slow.blocked
    assert any(began < t < ended for t in ticks)  # the loop ran while the child started (however slow the machine)


async def test_a_load_cancelled_while_the_child_starts_leaves_no_child(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(workdir)
    started: list[Any] = []
    real_start = campaign_loader._start_child

    def start_and_record(file_loader: Any) -> Any:
        conn, child = real_start(file_loader)
        started.append(child)
        return conn, child

    monkeypatch.setattr(campaign_loader, "forkserver", lambda real=campaign_loader.forkserver(): SlowToStart(real, 0.3))
    monkeypatch.setattr(campaign_loader, "_start_child", start_and_record)
    loader = CampaignLoader()
    task = asyncio.create_task(loader.load(s.campaigns_dir, s.templates_dir, s))
    await asyncio.sleep(0.1)  # inside the slow start
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(10):
        while not started:
            await asyncio.sleep(0.02)
    await asyncio.to_thread(started[0].join, 10)
    assert not started[0].is_alive() and loader._child is None
    await loader.close()
