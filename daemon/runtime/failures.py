"""Why the daemon could not start, as one line an operator can act on (never a traceback)."""

from __future__ import annotations

from topslot.errors import TopslotError
from topslot.settings import Settings


def failure_reason(exc: BaseException, settings: Settings) -> str:
    """One line: what failed and which setting to look at. Secrets and passwords never appear."""
    from topslot.store.db import database_problem

    if (database := database_problem(exc, settings.database_url)) is not None:
        return database
    if isinstance(exc, TopslotError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
