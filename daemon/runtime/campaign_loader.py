"""Campaign files loaded in a child process, one file at a time, each within a time limit.

A campaign file comes from outside. Its YAML is bounded before anything is built
(``topslot.yaml_source``), but loading also validates the model, compiles and renders the
templates and inlines CSS; the daemon must not trust all of that to be quick. So the daemon never
loads a campaign in its own process: a child process (forked from a clean ``forkserver``, nothing
of the daemon's event loop or connections inherited) loads the files in order and answers one
file at a time. The event loop, the systemd watchdog and the tracking server keep running meanwhile.

A file that takes longer than ``file_timeout`` seconds is refused as ``path:1:1: ...``: the child is
killed (its memory goes with it), a fresh one loads the remaining files, and the registry keeps
the previous good version of the refused campaign. Cancelling a load (SIGTERM during a reload or
during start-up) kills the child at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from topslot.config.campaigns import FileLoad, LoadResult, campaign_files, collect, load_file, missing_directory
from topslot.errors import Problem
from topslot.forkserver import context as forkserver
from topslot.logs import get_logger
from topslot.runtime.ports import resolved, sending_check
from topslot.settings import Settings
from topslot.templating import make_environment

log = get_logger("topslot.runtime")

FILE_TIMEOUT = 10.0
"""Seconds one campaign file may take to load, validate and compile (an honest one takes ~50 ms)."""

FileLoader = Callable[[Path, Path, Any, Settings], FileLoad]
"""Loads one file in the child: (path, templates_dir, jinja environment, settings) → result."""


def load_with_compile_check(path: Path, templates_dir: Path, env: Any, settings: Settings) -> FileLoad:
    """The child's work for one file: load, validate, and check it is sendable with the settings."""
    return load_file(path, templates_dir, env, sending_check(templates_dir, settings))


class CampaignLoader:
    """Loads a directory of campaign files in a child process; see the module docstring.

    ``load`` may be called again and again (each reload); calls are serialised. ``close`` ends the
    child. ``file_loader`` must be a module-level function (the child imports it by name)."""

    def __init__(self, *, file_timeout: float = FILE_TIMEOUT, file_loader: FileLoader = load_with_compile_check):
        self.file_timeout = file_timeout
        self.file_loader = file_loader
        self._child: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def load(self, campaigns_dir: Path, templates_dir: Path, settings: Settings) -> LoadResult:
        """Every campaign file of ``campaigns_dir``, as ``topslot.config.load_campaigns`` gives it,
        with paths resolved; a file that timed out or killed the child is one problem."""
        if not campaigns_dir.is_dir():
            return missing_directory(campaigns_dir)
        files = campaign_files(campaigns_dir)
        async with self._lock:
            loads: list[FileLoad] = []
            try:
                while len(loads) < len(files):
                    loads += await self._load_some(files[len(loads) :], templates_dir, settings)
            except BaseException:
                self._kill()  # cancelled (SIGTERM): the child must not outlive the load
                raise
        return resolved(collect(loads))

    async def close(self) -> None:
        conn, child = self._conn, self._child
        self._conn = self._child = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        if child is not None:
            await asyncio.to_thread(child.join, 2.0)
            if child.is_alive():
                child.kill()
                await asyncio.to_thread(child.join, 2.0)

    async def _load_some(self, files: Sequence[Path], templates_dir: Path, settings: Settings) -> list[FileLoad]:
        """Ask the child for ``files``; return what it answered before finishing or failing.
        A file it did not answer in time (or died on) becomes a problem and ends the list."""
        conn = await self._ensure_child()
        conn.send((list(files), templates_dir, settings))
        loads: list[FileLoad] = []
        for path in files:
            answer = await asyncio.to_thread(_receive, conn, self.file_timeout)
            if isinstance(answer, FileLoad):
                loads.append(answer)
                continue
            self._kill()
            log.error("campaign_load_aborted", path=str(path), reason=answer, timeout_s=self.file_timeout)
            loads.append(FileLoad(path, None, (Problem(str(path), 1, 1, _refusal(answer, self.file_timeout)),)))
            break
        return loads

    async def _ensure_child(self) -> Connection:
        """The running child's connection, starting one if need be. Started in a thread: the first
        start also starts the forkserver (~0.6 s of imports), which must not stall the event loop."""
        if self._conn is not None and self._child is not None and self._child.is_alive():
            return self._conn
        self._kill()
        starting = asyncio.ensure_future(asyncio.to_thread(_start_child, self.file_loader))
        try:
            conn, self._child = await asyncio.shield(starting)
        except asyncio.CancelledError:  # the start goes on in its thread: end the child once it is up
            starting.add_done_callback(_end_started_child)
            raise
        self._conn = conn
        return conn

    def _kill(self) -> None:
        conn, child = self._conn, self._child
        self._conn = self._child = None
        if child is not None and child.is_alive():
            child.kill()
        if conn is not None:
            conn.close()
        # nothing to reap: a forkserver child is the server's child, and the server reaps it


def _start_child(file_loader: FileLoader) -> tuple[Connection, multiprocessing.process.BaseProcess]:
    """A new child serving ``file_loader`` (blocking: run it in a thread)."""
    context = forkserver()
    parent, child_end = context.Pipe()
    child = context.Process(target=_serve, args=(child_end, file_loader), name="topslot-campaign-loader")
    child.daemon = True
    child.start()
    child_end.close()
    return parent, child


def _end_started_child(started: asyncio.Future[tuple[Connection, multiprocessing.process.BaseProcess]]) -> None:
    """For a child whose start was cancelled (the load was): kill it as soon as it exists."""
    if started.cancelled() or started.exception() is not None:
        return
    conn, child = started.result()
    if child.is_alive():
        child.kill()
    conn.close()


def _refusal(reason: str, timeout: float) -> str:
    if reason == "timeout":
        return (
            f"loading this file took longer than {timeout:g} s, the limit; it was stopped "
            "(the previous version of this campaign, if any, keeps running)"
        )
    return f"loading this file stopped the loader ({reason}); the previous version, if any, keeps running"


def _receive(conn: Connection, timeout: float) -> FileLoad | str:
    """The child's next answer, or why there is none: ``timeout`` or ``the loader process died``."""
    try:
        if not conn.poll(timeout):
            return "timeout"
        answer = conn.recv()
    except (EOFError, OSError):
        return "the loader process died"
    return answer if isinstance(answer, FileLoad) else "the loader process answered nonsense"


def _serve(conn: Connection, file_loader: FileLoader) -> None:
    """The child: answer each request (files, templates_dir, settings) file by file until told to stop."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        files, templates_dir, settings = request
        env = make_environment(templates_dir)  # fresh each reload: templates may have changed
        for path in files:
            try:
                answer = file_loader(path, templates_dir, env, settings)
            except Exception as exc:  # a bug, not the file's fault: still one problem, the rest go on
                answer = FileLoad(path, None, (Problem(str(path), 1, 1, f"could not be loaded: {exc!r}"),))
            conn.send(answer)
