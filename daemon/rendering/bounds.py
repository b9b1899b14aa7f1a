"""Bounded rendering: a render stops at its deadline or when its output grows past the limit.

The sandbox (``topslot.templating.TemplateSandbox``) caps what single operations may build and
checks the deadline on every call, attribute access and ``range`` step. ``render_bounded`` adds the
output cap (checked chunk by chunk, as ``generate()`` yields) and sets the deadline.
``render_checked`` is for validation (once per load): it also traces the template's own Python
frames, so even loops that call nothing (``{% for x in s %}{% endfor %}``) hit the deadline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from jinja2 import Template

from topslot.templating import RenderLimitError, check_deadline, reset_deadline, set_deadline

DEFAULT_MAX_SECONDS = 2.0
DEFAULT_MAX_CHARS = 1_000_000


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """How long one render may take and how much text it may produce."""

    max_seconds: float = DEFAULT_MAX_SECONDS
    max_chars: int = DEFAULT_MAX_CHARS


DEFAULT_LIMITS = RenderLimits()


def render_bounded(template: Template, context: Mapping[str, Any], limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """Render ``template``; RenderLimitError when it runs past ``limits``."""
    token = set_deadline(time.monotonic() + limits.max_seconds)
    try:
        return _collect(template, context, limits.max_chars)
    finally:
        reset_deadline(token)


def _collect(template: Template, context: Mapping[str, Any], max_chars: int) -> str:
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.root_render_func(template.new_context(dict(context))):
            size += len(chunk)
            if size > max_chars:
                raise RenderLimitError(f"the template's output is longer than {max_chars:,} characters")
            parts.append(chunk)
    except Exception:
        # Jinja's own handler rewrites the traceback to point at template lines
        template.environment.handle_exception()
    return "".join(parts)


class BoundedTemplate:
    """A compiled template on the per-message hot path: ``render_bounded`` without Jinja's
    per-render ChainMap walk (the globals are flattened once), and one parent dict per message
    shared by the message's templates (they come from one environment)."""

    __slots__ = ("template", "limits", "globals", "_context_class", "_env", "_name", "_blocks")

    def __init__(self, template: Template, limits: RenderLimits = DEFAULT_LIMITS):
        self.template = template
        self.limits = limits
        self.globals = dict(template.globals)
        self._env = template.environment
        self._context_class = self._env.context_class
        self._name = template.name
        self._blocks = template.blocks

    def parent(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The variables one message's renders see (pass the result to ``render``)."""
        return {**self.globals, **context}

    def render(self, parent: dict[str, Any]) -> str:
        context = self._context_class(self._env, parent, self._name, self._blocks, globals=self.globals)
        token = set_deadline(time.monotonic() + self.limits.max_seconds)
        max_chars = self.limits.max_chars
        parts: list[str] = []
        size = 0
        try:
            for chunk in self.template.root_render_func(context):
                size += len(chunk)
                if size > max_chars:
                    raise RenderLimitError(f"the template's output is longer than {max_chars:,} characters")
                parts.append(chunk)
        except Exception:
            self._env.handle_exception()
        finally:
            reset_deadline(token)
        return "".join(parts)


def render_checked(template: Template, context: Mapping[str, Any], limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """``render_bounded`` plus a line tracer on template frames (slow: use it to validate)."""
    previous = sys.gettrace()

    def on_line(frame: FrameType, event: str, arg: Any) -> Any:
        check_deadline()
        return on_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and not frame.f_code.co_filename.endswith(".py"):
            check_deadline()
            return on_line  # template code: check on every line it runs
        return None

    sys.settrace(on_call)
    try:
        return render_bounded(template, context, limits)
    finally:
        sys.settrace(previous)
