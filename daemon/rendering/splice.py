"""Pre-rendered templates: literal text with per-recipient values spliced in, no Jinja per message.

Most campaign templates only interpolate per-recipient values: ``{{ contact.first_name }}``,
``{{ coupon }}``, ``{{ track('https://…') }}``, ``{{ unsubscribe_url }}``. ``Splice.of`` reads such a
template's syntax tree once, when the campaign compiles, and keeps its output as literal pieces with
gaps; ``Splice.render`` then fills the gaps and joins. A template is spliceable only when its whole
body is output made of:

- template data (the literal text, as Jinja's lexer left it: whitespace control and the dropped
  final newline already applied);
- ``{{ name }}`` for ``coupon``, ``landing_url``, ``unsubscribe_url``, ``slot``;
- ``{{ contact.<field> }}`` (a contact view field, not ``attributes``) and ``{{ campaign.id }}`` /
  ``{{ campaign.name }}``;
- ``{{ track(<string literal>) }}`` and ``{{ track(landing_url) }}``.

Anything else (a filter, a test, a branch, a loop, a block, an include, a macro, ``{% autoescape %}``,
another name) leaves the template to Jinja (``Splice.of`` returns None). Each value is converted as
the compiled template would: ``markupsafe.escape`` in an autoescaped template, ``str`` otherwise,
so the result is the same string Jinja renders (the tests compare them on random contacts).
``track`` is called directly only when the sandbox would call it directly too (a function of ours
marked ``template_function``, or a plain Python function without Jinja's or the sandbox's markers);
otherwise, and whenever anything raises (a missing name, a refused URL), the caller renders the
message with Jinja, which raises the very same error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import FunctionType, MethodType
from typing import Any

from jinja2 import Environment, TemplateError, nodes
from markupsafe import escape

from topslot.templating import _PLAIN_FUNCTIONS, CONTACT_FIELDS, CampaignView, ContactView

_HTML_SPECIAL = re.compile("[&<>'\"]")  # what markupsafe.escape replaces
_NAMES = frozenset({"coupon", "landing_url", "unsubscribe_url", "slot"})
_FIELDS = {"contact": frozenset(CONTACT_FIELDS) - {"attributes"}, "campaign": frozenset({"id", "name"})}
_VIEWS = (ContactView, CampaignView)  # what the sandbox reads fields of without its checks
_JINJA_MARKERS = ("jinja_pass_arg", "unsafe_callable", "alters_data")

Gap = tuple[int, str, str]  # (kind, key, detail): see Splice.render
_NAME, _ATTR, _TRACK, _TRACK_NAME = 0, 1, 2, 3


class NotSpliceable(Exception):
    """This message cannot be spliced (its ``track`` is not called directly by the sandbox)."""


class Splice:
    """A template's output as literal pieces and gaps (see the module doc); build with ``of``."""

    __slots__ = ("pieces", "gaps", "autoescape", "longest_line")

    def __init__(self, pieces: list[str], gaps: list[tuple[int, str, Any]], autoescape: bool):
        self.pieces = pieces  # len(gaps) + 1 literal pieces: piece 0, gap 0, piece 1, gap 1, ...
        self.gaps = gaps
        self.autoescape = autoescape
        # octets of the longest line of the literal text (the gaps empty): no line of an output is
        # longer than this plus the octets of its values (see ``render``)
        self.longest_line = max(len(line.encode("utf-8")) for line in "".join(pieces).split("\n"))

    @classmethod
    def of(cls, env: Environment, source: str, name: str) -> Splice | None:
        """The splice of template ``source`` compiled as ``name`` in ``env`` (its name picks
        autoescape, as for the compiled template), or None when it is not spliceable."""
        try:
            tree = env.parse(source, name)
        except TemplateError:
            return None
        autoescape = env.autoescape(name) if callable(env.autoescape) else bool(env.autoescape)
        pieces: list[str] = [""]
        gaps: list[tuple[int, str, Any]] = []
        for output in tree.body:
            if type(output) is not nodes.Output:
                return None
            for node in output.nodes:
                if type(node) is nodes.TemplateData:
                    pieces[-1] += node.data
                    continue
                gap = _gap(node)
                if gap is None:
                    return None
                gaps.append(gap)
                pieces.append("")
        if any(key in env.globals for _, key, _ in gaps):
            return None  # a global of that name would answer when the message lacks the name
        return cls(pieces, gaps, autoescape)

    def render(self, context: Mapping[str, Any], tracked: dict[Any, Any], max_chars: int) -> tuple[str, int]:
        """The template's output for ``context`` (the message's names), and the octets (UTF-8) of
        the values spliced in. ``tracked``: the message's ``track`` results by argument, shared by
        its templates (``track`` is called once per distinct URL). Raises (anything) when Jinja
        must render it instead: ``NotSpliceable``, the error of a missing name or a refused URL,
        or ``ValueError`` for output over ``max_chars`` (Jinja raises the limit error then).

        Every line of the output is at most ``longest_line`` + that many octets long: an output
        line holds fragments of one literal line and of values."""
        pieces = self.pieces
        out = [pieces[0]]
        autoescape = self.autoescape
        spliced = 0
        for i, (kind, key, detail) in enumerate(self.gaps, 1):
            if kind == _NAME:
                value = context[key]
            elif kind == _ATTR:
                owner = context[key]
                if type(owner) not in _VIEWS:
                    raise NotSpliceable
                value = getattr(owner, detail)
            else:
                argument = detail if kind == _TRACK else context[detail]
                value = tracked.get(argument, tracked)
                if value is tracked:
                    value = tracked[argument] = _call_track(context["track"], argument)
            if type(value) is not str:
                value = escape(value) if autoescape else str(value)
            elif autoescape and _HTML_SPECIAL.search(value):  # else escape() would give it back as it is
                value = escape(value)
            spliced += len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
            out.append(value)
            out.append(pieces[i])
        text = "".join(out)
        if len(text) > max_chars:
            raise ValueError("over the output limit")
        return text, spliced


def _gap(node: nodes.Node) -> tuple[int, str, Any] | None:
    kind = type(node)
    if kind is nodes.Name and node.name in _NAMES and node.ctx == "load":  # type: ignore[attr-defined]
        return (_NAME, node.name, None)  # type: ignore[attr-defined]
    if kind is nodes.Getattr:
        owner = node.node  # type: ignore[attr-defined]
        if type(owner) is nodes.Name and node.attr in _FIELDS.get(owner.name, ()):  # type: ignore[attr-defined]
            return (_ATTR, owner.name, node.attr)  # type: ignore[attr-defined]
        return None
    if kind is nodes.Call:
        call: nodes.Call = node  # type: ignore[assignment]
        if (
            type(call.node) is not nodes.Name
            or call.node.name != "track"
            or call.kwargs
            or call.dyn_args is not None
            or call.dyn_kwargs is not None
            or len(call.args) != 1
        ):
            return None
        (argument,) = call.args
        if type(argument) is nodes.Const and type(argument.value) is str:
            return (_TRACK, "track", argument.value)
        if type(argument) is nodes.Name and argument.name == "landing_url":
            return (_TRACK_NAME, "track", "landing_url")
    return None


def _call_track(track: Callable[[Any], Any], argument: Any) -> Any:
    """``track(argument)`` when the sandbox would make that very call; else NotSpliceable."""
    kind = type(track)
    if kind is MethodType:
        if track.__func__ not in _PLAIN_FUNCTIONS:  # type: ignore[attr-defined]
            raise NotSpliceable
    elif kind is not FunctionType or (
        track not in _PLAIN_FUNCTIONS and any(getattr(track, marker, None) for marker in _JINJA_MARKERS)
    ):
        raise NotSpliceable
    return track(argument)
