"""The topslot daemon: one asyncio service, one ``AsyncExitStack`` that undoes everything it set up.

start: signal handlers → logging → the SQLite database's daemon lock (a second daemon on the same
file stops here: ``topslot.runtime.database_lock``) → database (migrations) → tracking server → campaigns (loaded in a
child process with a time limit per file; every problem logged, the valid ones run) → tell listeners
→ watch the campaign and template files → READY=1. Then it runs until SIGTERM/SIGINT (graceful
stop) and reloads on SIGHUP or on a file change, once the changed files have been quiet for
``settle_ms`` (a file written in several steps is judged once, whole). SIGTERM during start-up stops
it just as gracefully. A start-up failure is one ``daemon_failed`` error event with its reason.

The scheduler and dispatcher plug in as ``CampaignsListener``s: each gets the full set of active
campaigns after start and after every reload that changed something.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any, Protocol, Self

from watchfiles import DefaultFilter, awatch

from topslot import metrics
from topslot.bounces.receiver import FeedbackReceiver
from topslot.campaign import Campaign
from topslot.clock import Clock, SystemClock
from topslot.dispatch.heartbeat import NodeFenced
from topslot.dispatch.service import DRAIN_TIMEOUT, DispatchService
from topslot.errors import Problem
from topslot.health import Health
from topslot.heap import settle_heap
from topslot.links.keys import load_keyring
from topslot.logs import configure_logging, get_logger
from topslot.runtime.campaign_loader import CampaignLoader
from topslot.runtime.database_lock import hold_database
from topslot.runtime.failures import failure_reason
from topslot.runtime.notify import Notifier
from topslot.runtime.registry import CampaignRegistry, Changes
from topslot.scheduling.scheduler import BucketScheduler
from topslot.settings import Settings
from topslot.store.db import display_url, prepare_database
from topslot.tracking.conversions_route import conversions_handler
from topslot.tracking.feedback_route import feedback_handler
from topslot.tracking.im_routes import im_handlers
from topslot.tracking.server import TrackingOptions, TrackingServer
from topslot.tracking.twilio_routes import twilio_handlers

log = get_logger("topslot.runtime")


class CampaignsListener(Protocol):
    """What the scheduler implements to follow the active campaigns."""

    async def on_campaigns_changed(self, campaigns: Mapping[str, Campaign]) -> None:
        """Called after start and after each reload that changed the active set (the whole set each time)."""
        ...


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        listeners: Sequence[CampaignsListener] = (),
        notifier: Notifier | None = None,
        watch: bool = True,
        schedule: bool = True,
        track: bool = True,
        watch_debounce_ms: int = 300,
        settle_ms: int = 1000,
        campaign_loader: CampaignLoader | None = None,
        handle_signals: bool = True,
        configure_logs: bool = True,
        log_stream: IO[str] | None = None,
    ):
        self.settings = settings
        self.clock = clock or SystemClock()
        self.listeners = list(listeners)
        self.notifier = notifier or Notifier()
        self.watch = watch
        self.schedule = schedule
        self.scheduler: BucketScheduler | None = None
        self.dispatch: DispatchService | None = None
        self.track = track  # serve tracking HTTP (opens, clicks, one-click unsubscribes)
        self.tracking: TrackingServer | None = None
        self.feedback: FeedbackReceiver | None = None  # the bounce receiver (bounces.listen_port)
        self.watch_debounce_ms = watch_debounce_ms
        self.settle_ms = settle_ms
        self.loader = campaign_loader or CampaignLoader()
        self.handle_signals = handle_signals
        self.configure_logs = configure_logs
        self.log_stream = log_stream
        self.registry = CampaignRegistry()
        self.health = Health()  # degraded while the database refuses work: /healthz, the systemd status
        self.problems: list[Problem] = []
        self.engine: Any = None
        self.ready = asyncio.Event()
        self.reloads = 0
        self._stop = asyncio.Event()
        self._closing = False  # close() began (a failed start cleans up this way too)
        self._failure: BaseException | None = None  # why it stopped on its own (``run`` raises it)
        self._stack = AsyncExitStack()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def campaigns(self) -> Mapping[str, Campaign]:
        return self.registry.active

    def source_of(self, campaign_id: str) -> Path | None:
        """The file an active campaign was loaded from."""
        return self.registry.source_of(campaign_id)

    def add_listener(self, listener: CampaignsListener) -> None:
        self.listeners.append(listener)

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self) -> None:
        """Start, serve until asked to stop, clean up. The whole life of ``topslot run``.

        A stop asked for during start-up (SIGTERM before READY) abandons the start and cleans up."""
        start = asyncio.create_task(self.start(), name="topslot-start")
        stop = asyncio.create_task(self._stop.wait(), name="topslot-stop-requested")
        try:
            await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not start.done() and not self._closing:  # a stop asked for during start-up (SIGTERM)
            start.cancel()  # start() cleans up after itself
            with contextlib.suppress(asyncio.CancelledError):
                await start
            return
        await start  # a failed start (cleaning up after itself) raises here
        try:
            await self._stop.wait()
        finally:
            await self.close()
        if self._failure is not None:  # e.g. found dead by another node: exit non-zero, systemd restarts it
            raise self._failure

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                log.error("daemon_failed", reason=failure_reason(exc, self.settings), error_type=type(exc).__name__)
            await self.close()
            raise

    async def _start(self) -> None:
        s = self.settings
        if self.configure_logs:
            configure_logging(s.log_level, s.log_format, s.secret_values(), self.log_stream)
        if self.handle_signals:  # first: a SIGTERM during start-up is a graceful stop too
            self._install_signal_handlers()
        log.info(
            "daemon_starting",
            config_dir=str(s.config_dir),
            database=display_url(s.database_url),
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],  # uvloop | asyncio
        )
        self._stack.callback(self.notifier.close)
        self._stack.push_async_callback(self.loader.close)
        self._stack.push_async_callback(self._announce_stopped)
        self.health.listeners.append(self._health_changed)
        self._stack.enter_context(hold_database(s.database_url))  # SQLite: one daemon per file, else DatabaseInUse
        self.notifier.status("opening database")
        # created (SQLite: and its directory), migrated; a session stuck in a transaction is ended by the
        # server after the node timeout, so that nobody waits for a stopped node's row locks
        self.engine = await prepare_database(s.database_url, idle_in_transaction_s=s.node_timeout_s)
        self._stack.push_async_callback(self._dispose_engine)
        log.info("database_ready", database=display_url(s.database_url))
        if self.track:  # up before anything sends: every unsubscribe link works from the first message
            self.notifier.status("starting the tracking server")
            keyring = load_keyring(s)
            self.tracking = TrackingServer(
                self.engine, keyring, self.clock, TrackingOptions.from_settings(s), health=self.health
            )
            key = s.conversion_webhook_key.get_secret_value() if s.conversion_webhook_key else None
            self.tracking.add_route(
                "/conversions", conversions_handler(self.engine, key, keyring, self.clock, lambda: self.campaigns)
            )
            for route, handler in twilio_handlers(self.engine, s, self.clock).items():  # /twilio/status, /inbound
                self.tracking.add_route(route, handler)
            for route, handler in im_handlers(self.engine, s, self.clock).items():  # /im/status
                self.tracking.add_route(route, handler)
            feedback_key = s.feedback_webhook_key.get_secret_value() if s.feedback_webhook_key else None
            self.tracking.add_route(  # an ESP's bounce and complaint events
                "/feedback", feedback_handler(self.engine, feedback_key, keyring, s.bounces, self.clock)
            )
            self.tracking.ready_checks["campaigns"] = self._campaigns_ready
            if self.schedule:
                self.tracking.ready_checks["scheduler"] = self._scheduler_ready
            await self.tracking.start()
            self._stack.push_async_callback(self.tracking.close)
            if s.bounces.listen_port is not None:  # bounces, complaints and mailto: unsubscribes
                self.feedback = FeedbackReceiver(self.engine, keyring, s.bounces, self.clock)
                await self.feedback.start()
                self._stack.push_async_callback(self.feedback.close)
        if self.schedule:
            self.dispatch = DispatchService(
                self.engine, s, self.clock, on_recovered=self._rebuild_jobs, health=self.health,
                on_declared_dead=self._declared_dead, held=self._held_campaigns,
            )  # fmt: skip
            self.scheduler = BucketScheduler(
                self.engine, s, self.clock, owner=self.dispatch.owner, on_claimed=self.dispatch.dispatch,
                on_fire=self.dispatch.fire_helpers if self.dispatch.helpers is not None else None,
                on_finished=self.dispatch.finish_bucket, health=self.health, versions_of=self.registry.version_of,
            )  # fmt: skip
            await self.dispatch.start()
            self._stack.push_async_callback(self.dispatch.close)
            self.scheduler.start()
            self._stack.push_async_callback(self._drain)
            self.listeners[:0] = [self.dispatch, self.scheduler]  # the dispatcher knows a campaign before it fires
        self.notifier.status("loading campaigns")
        self._stack.push_async_callback(self._cancel_tasks)
        if self.watch:  # watching before the first load: a file changed while it runs is reloaded after it
            self._spawn(self._watch_files(), "watch")
            await asyncio.sleep(0)
        await self.reload("start")
        if self.notifier.watchdog_interval is not None:
            self._spawn(self._watchdog(), "watchdog")
        settle_heap()  # everything that lives as long as the daemon exists now: out of the collector's walks
        self.notifier.ready(self._status())
        self.ready.set()
        log.info("daemon_ready", campaigns=sorted(self.campaigns), problems=len(self.problems))

    def _declared_dead(self) -> None:
        """Another node found this one dead and took its rows: fenced for good, it stops and ``run``
        raises (exit 1), so that systemd starts it afresh under a new identity."""
        if self.dispatch is not None:
            self._failure = NodeFenced(self.dispatch.owner)
        self.request_stop("declared_dead")

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            log.info("daemon_stopping", reason=reason)
            self.notifier.stopping()
            self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        self._closing = True
        self.request_stop("closing")
        await self._stack.aclose()

    async def _announce_stopped(self) -> None:
        log.info("daemon_stopped")

    async def _dispose_engine(self) -> None:
        dispose = getattr(self.engine, "dispose", None)
        if dispose is not None:
            await dispose()

    # ---------------------------------------------------------------- campaigns

    async def reload(self, reason: str) -> Changes:
        """Reload every campaign file; keep the last good version of any file that now has problems."""
        async with self._reload_lock:
            if reason != "start":
                self.notifier.reloading()
            s = self.settings
            loaded = await self.loader.load(s.campaigns_dir, s.templates_dir, s)
            self.problems = loaded.problems
            for problem in loaded.problems:
                log.warning(
                    "campaign_problem",
                    path=problem.path,
                    line=problem.line,
                    column=problem.column,
                    message=problem.message,
                    problem=str(problem),
                )
            changes = self.registry.apply(loaded.campaigns, loaded.sources, set(loaded.files), loaded.versions)
            self.reloads += 1
            for cid in changes.loaded:
                log.info("campaign_loaded", campaign_id=cid, source=_source(self.registry, cid))
            for cid in changes.updated:
                log.info("campaign_updated", campaign_id=cid, source=_source(self.registry, cid))
            for cid in changes.kept:
                log.warning("campaign_kept_previous", campaign_id=cid, source=_source(self.registry, cid))
            for cid in changes.unloaded:
                log.info("campaign_unloaded", campaign_id=cid)
            log.info(
                "campaigns_reloaded",
                reason=reason,
                active=len(self.campaigns),
                problems=len(loaded.problems),
                loaded=len(changes.loaded),
                updated=len(changes.updated),
                kept=len(changes.kept),
                unloaded=len(changes.unloaded),
            )
            if changes.changed or reason == "start":
                await self._publish()
            if reason != "start":
                self.notifier.ready_again(self._status())
            return changes

    async def _publish(self) -> None:
        active = self.campaigns
        for listener in self.listeners:
            try:
                await listener.on_campaigns_changed(active)
            except Exception:
                log.exception("listener_failed", listener=type(listener).__name__)

    async def _drain(self) -> None:
        """On stop: buckets on the wire finish their chunks; the rest stays planned for the next start."""
        assert self.scheduler is not None and self.dispatch is not None
        self.dispatch.stop_sending()
        await self.scheduler.drain(DRAIN_TIMEOUT.total_seconds())

    def _held_campaigns(self) -> set[str]:
        """Campaigns held back: another version than this node's files is in force."""
        return set(self.scheduler.versions.held) if self.scheduler is not None else set()

    async def _rebuild_jobs(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.rebuild_jobs()

    def _status(self) -> str:
        problems = f", {len(self.problems)} problem(s)" if self.problems else ""
        degraded = "" if self.health.status == "ok" else "; degraded: the database refuses work"
        return f"running: {len(self.campaigns)} campaign(s){problems}{degraded}"

    def _health_changed(self, _status: str) -> None:
        """The systemd status line says when the daemon is degraded (``systemctl status``)."""
        if self.ready.is_set():
            self.notifier.status(self._status())

    # ---------------------------------------------------------------- background tasks

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"topslot-{name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task_failed", task=task.get_name(), error=repr(exc))
            self.request_stop("task_failed")

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _watch_files(self) -> None:
        """Reload once changed files have been quiet for ``settle_ms``: a file saved in several
        writes (truncate, half, the rest) is judged once, when whole, never half-written."""
        s = self.settings
        s.campaigns_dir.mkdir(parents=True, exist_ok=True)
        paths = [s.campaigns_dir] + ([s.templates_dir] if s.templates_dir.is_dir() else [])
        log.info("watching_files", paths=[str(p) for p in paths])
        batches: asyncio.Queue[set[str] | BaseException] = asyncio.Queue()

        async def collect() -> None:
            try:
                async for changes in awatch(
                    *paths,
                    watch_filter=DefaultFilter(),
                    debounce=self.watch_debounce_ms,
                    step=50,
                    stop_event=self._stop,
                    recursive=True,
                ):
                    batches.put_nowait({path for _, path in changes})
            except Exception as exc:
                batches.put_nowait(exc)

        async def next_batch() -> set[str]:
            item = await batches.get()
            if isinstance(item, BaseException):
                raise item
            return item

        collector = asyncio.create_task(collect(), name="topslot-watch-collect")
        try:
            while True:
                changed = await next_batch()
                while True:  # wait for quiet: every further change restarts the wait
                    try:
                        async with asyncio.timeout(self.settle_ms / 1000):
                            changed |= await next_batch()
                    except TimeoutError:
                        break
                log.info("files_changed", paths=sorted(changed))
                await self._reload_quietly("files_changed")
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        assert interval is not None
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval.total_seconds())

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
            self._stack.callback(loop.remove_signal_handler, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._stack.callback(loop.remove_signal_handler, signal.SIGHUP)

    def _on_sighup(self) -> None:
        log.info("reload_requested", signal="SIGHUP")
        self._spawn(self._reload_quietly("sighup"), "reload")

    async def _reload_quietly(self, reason: str) -> None:
        try:
            await self.reload(reason)
        except Exception:
            metrics.RELOAD_FAILURES.inc()
            log.exception("reload_failed", reason=reason)

    # ---------------------------------------------------------------- /readyz

    def _campaigns_ready(self) -> str | None:
        """Ready once the campaign files have been loaded (``reload("start")`` ran), whatever they held."""
        return None if self.reloads > 0 else "campaigns not loaded yet"

    def _scheduler_ready(self) -> str | None:
        if self._closing:
            return "stopping"
        if self.scheduler is None or not self.scheduler.running:
            return "scheduler not running"
        return None


def _source(registry: CampaignRegistry, cid: str) -> str | None:
    path = registry.source_of(cid)
    return str(path) if path else None
