"""One root error for topslot, and the problem record every validator reports."""

from __future__ import annotations

from dataclasses import dataclass

from topslot.delivery import SuppressionReason


class TopslotError(Exception):
    """Root of every error topslot raises on purpose."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input file, located as precisely as known."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class InvalidInput(TopslotError):
    """Input from outside (YAML, CSV, templates) failed validation; carries every problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SendError(TopslotError):
    """A channel could not hand a message over. Channels translate vendor errors into one of the
    three kinds below at their edge; the dispatcher decides the ledger state from the kind alone."""

    def __init__(self, message: str, *, code: int | str | None = None, provider_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.provider_id = provider_id


class TransientSendError(SendError):
    """Not accepted, safe to retry later (4xx, 429, connection refused before the body was sent)."""

    def __init__(self, message: str, *, code: int | str | None = None, retry_after: float | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Refused for good (5xx, invalid number). ``suppress``: the address itself is dead (hard bounce
    such as 5.1.1, Twilio 21610 STOP): add it to the suppression list, for ``suppress_reason``
    (``hard_bounce`` unless the provider knows better)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | str | None = None,
        suppress: bool = False,
        suppress_reason: SuppressionReason = SuppressionReason.HARD_BOUNCE,
    ):
        super().__init__(message, code=code)
        self.suppress = suppress
        self.suppress_reason = suppress_reason


class AmbiguousSendError(SendError):
    """Accepted or not is unknown (connection lost after the body was sent): never resent automatically."""
