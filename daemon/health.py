"""The daemon's health as ops see it: ``ok``, or ``degraded`` while the database refuses work.

One ``Health`` per daemon process, shared by what writes the ledger (the bucket scheduler and the
dispatcher record every failure and success of a database step here, each under its own name)
and shown by what reports (``/healthz``, the systemd status line). It is degraded from the first
failure until every step that failed has worked again: a disk that is full still takes updates
but not inserts, and one kind of step working says nothing of another. A change of state is logged
once: ``database_degraded`` (a warning: what failed, where), ``database_recovered`` (how long it
lasted); steps failing or working meanwhile log nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from topslot.logs import get_logger

log = get_logger("health")

Listener = Callable[[str], None]  # told the new status ("ok" / "degraded: ...") on every change


@dataclass
class _Trouble:
    since: float  # time.monotonic()
    where: str
    error: str
    failing: set[str]  # the steps that failed and have not worked since


class Health:
    """Whether the database takes work now (see the module docstring)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self._trouble: _Trouble | None = None
        self.listeners: list[Listener] = []

    @property
    def status(self) -> str:
        return "ok" if self._trouble is None else "degraded"

    def database_failed(self, where: str, exc: BaseException) -> None:
        """The database step ``where`` failed for now (``topslot.store.db.is_transient``)."""
        error = f"{type(exc).__name__}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0][:200]}"
        if self._trouble is not None:
            self._trouble.where, self._trouble.error = where, error
            self._trouble.failing.add(where)
            return
        self._trouble = _Trouble(self._monotonic(), where, error, {where})
        log.warning("database_degraded", where=where, error=error)
        self._tell(f"degraded: the database refuses work ({error})")

    def database_ok(self, where: str) -> None:
        """The database step ``where`` worked."""
        trouble = self._trouble
        if trouble is None:
            return
        trouble.failing.discard(where)
        if trouble.failing:
            return
        self._trouble = None
        log.info("database_recovered", after_s=round(self._monotonic() - trouble.since, 3), last_error=trouble.error)
        self._tell("ok")

    def as_dict(self) -> dict[str, object]:
        """For ``/healthz``: the status and, while degraded, since how long, where and why."""
        if self._trouble is None:
            return {"status": "ok"}
        return {
            "status": "degraded",
            "database": {
                "degraded_for_s": round(self._monotonic() - self._trouble.since, 3),
                "where": self._trouble.where,
                "error": self._trouble.error,
            },
        }

    def _tell(self, status: str) -> None:
        for listener in self.listeners:
            listener(status)
