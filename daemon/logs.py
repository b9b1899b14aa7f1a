"""Structured logs: JSON lines off a terminal, a readable console on one; secrets and addresses never leak.

Every event has a stable snake_case name (catalogue: docs/logging.md). Use ``get_logger()`` and bind
delivery context with ``bound(campaign_id=..., slot=..., channel=..., delivery_id=...)``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
PII_KEYS = frozenset(
    {"email", "phone", "address", "to", "recipient", "rcpt", "mobile", "msisdn", "email_address", "phone_number"}
)
PII_SUFFIXES = ("_email", "_phone", "_address")
SECRET_KEYS = frozenset({"password", "token", "auth_token", "secret", "authorization", "api_key", "signing_key"})
MIN_SECRET_LENGTH = 4  # shorter "secrets" would shred ordinary text
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE_RE = re.compile(r"(?<![\w+])\+[1-9]\d{7,14}\b")
_NOT_PII = frozenset({"postal_address"})  # the sender's own published address


def pii_hash(value: object) -> str:
    """A short stable hash of an address ("h:3f2a9c1e"): correlate log lines without the raw value."""
    text = str(value).strip().lower()
    return "h:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


class Scrubber:
    """structlog processor: redact known secret values everywhere, hash address-like values."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets: list[str] = []
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # longest first, so a secret that contains another is replaced whole
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        return {key: self._clean(key, value) for key, value in event_dict.items()}

    def _clean(self, key: str | None, value: Any) -> Any:
        k = key.lower() if isinstance(key, str) else None
        if k in SECRET_KEYS and value is not None:
            return REDACTED
        if k is not None and k not in _NOT_PII and (k in PII_KEYS or k.endswith(PII_SUFFIXES)) and value:
            # Addresses are text; a number under such a key is a count (e.g. per-channel totals).
            if isinstance(value, str):
                return pii_hash(value)
            if isinstance(value, list | tuple | set | frozenset):
                return [pii_hash(v) if isinstance(v, str) else v for v in value]
        if isinstance(value, str):
            return self._clean_text(value)
        if isinstance(value, Mapping):
            return {kk: self._clean(kk if isinstance(kk, str) else None, vv) for kk, vv in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(None, v) for v in value]
        if isinstance(value, BaseException):
            return self._clean_text(repr(value))
        return value

    def _clean_text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _EMAIL_RE.sub(lambda m: pii_hash(m.group(0)), text)
        return _PHONE_RE.sub(lambda m: pii_hash(m.group(0)), text)


_scrubber = Scrubber()
QUIET_LIBRARIES = ("watchfiles", "apscheduler", "alembic")  # chatty at INFO; topslot logs its own events for these


class CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a CLI
    command's log lines stay off stdout (its data) and never go to a stream replaced since."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> None:
    """Set up structlog (and route the standard ``logging`` module through the same pipeline).

    ``fmt``: ``json`` | ``console`` | ``auto`` (console on a terminal, JSON otherwise).
    """
    out = stream if stream is not None else sys.stdout
    _scrubber.set_secrets(secrets)
    use_console = fmt == "console" or (fmt == "auto" and _isatty(out))
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=_isatty(out)) if use_console else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _scrubber,
    ]
    structlog.configure(
        processors=[
            *shared[:3],
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared[:3], structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _scrubber, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_topslot", False):
            root.removeHandler(old)
    handler._topslot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.INFO))  # library chatter below INFO stays out
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(component: str | None = None) -> Any:
    """A lazy structlog logger (safe at import time); ``component`` is recorded on every line."""
    return structlog.get_logger(component=component) if component else structlog.get_logger()


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """Attach context (campaign_id, slot, channel, delivery_id, ...) to every event in this block/task."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in context.items() if v is not None}):
        yield
