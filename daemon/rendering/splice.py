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
- ``{{ track(<string literal>) }}`` and ``{{ track(landing_url) }}``;
- ``{% if %}`` / ``{% elif %}`` / ``{% else %}`` whose branches are made of the above, and whose tests
  use only: those names and fields, literals (strings, numbers, ``true``/``false``/``none``), ``and``,
  ``or``, ``not``, ``==`` / ``!=``, and ``.startswith(...)`` / ``.endswith(...)`` of a string with
  string literals (``(contact.locale or "").startswith("zh")``). A test is evaluated as Python
  evaluates the code Jinja compiles from it; a value of any other type than ``str``, ``int``,
  ``bool`` or ``None`` met on the way leaves the message to Jinja.

Anything else (a filter, a Jinja test, a loop, a block, an include, a macro, ``{% autoescape %}``,
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
_NAME, _ATTR, _TRACK, _TRACK_NAME, _BRANCH = 0, 1, 2, 3, 4
_PLAIN_TYPES = (str, int, bool, type(None))  # what a test may meet: no type of its own to call into
Test = Callable[[Mapping[str, Any]], Any]


class NotSpliceable(Exception):
    """This message cannot be spliced (its ``track`` is not called directly by the sandbox)."""


class Splice:
    """A template's output as literal pieces and gaps (see the module doc); build with ``of``."""

    __slots__ = ("pieces", "gaps", "autoescape", "literal_octets", "longest_line")

    literal_octets: int  # of all its literal text, its branches' included
    longest_line: int

    def __init__(self, pieces: list[str], gaps: list[tuple[int, str, Any]], autoescape: bool):
        self.pieces = pieces  # len(gaps) + 1 literal pieces: piece 0, gap 0, piece 1, gap 1, ...
        self.gaps = gaps  # a branch's detail: ([(test, Splice), ...], the else Splice)
        self.autoescape = autoescape
        # no line of an output is longer than this plus the octets of its values (see ``render``):
        # the longest line of the literal text, or with branches all of their literal text (an
        # output line holds fragments of literal lines, each piece at most once, in any branch)
        branches = [splice for kind, _, detail in gaps if kind == _BRANCH for splice in _splices_of(detail)]
        self.literal_octets = len("".join(pieces).encode("utf-8")) + sum(b.literal_octets for b in branches)
        if branches:
            self.longest_line = self.literal_octets
        else:
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
        names: set[str] = set()
        splice = cls._of(tree.body, autoescape, names)
        if splice is None or any(key in env.globals for key in names):
            return None  # a global of that name would answer when the message lacks the name
        return splice

    @classmethod
    def _of(cls, body: list[nodes.Node], autoescape: bool, names: set[str]) -> Splice | None:
        """The splice of a list of statements (a template's body, a branch's), or None; ``names``
        collects the context names it reads."""
        pieces: list[str] = [""]
        gaps: list[tuple[int, str, Any]] = []
        for statement in body:
            if type(statement) is nodes.If:
                branch = cls._branch(statement, autoescape, names)
                if branch is None:
                    return None
                gaps.append((_BRANCH, "", branch))
                pieces.append("")
                continue
            if type(statement) is not nodes.Output:
                return None
            for node in statement.nodes:
                if type(node) is nodes.TemplateData:
                    pieces[-1] += node.data
                    continue
                gap = _gap(node)
                if gap is None:
                    return None
                names.add(gap[1])
                gaps.append(gap)
                pieces.append("")
        return cls(pieces, gaps, autoescape)

    @classmethod
    def _branch(
        cls, statement: nodes.If, autoescape: bool, names: set[str]
    ) -> tuple[list[tuple[Test, Splice]], Splice] | None:
        """An ``{% if %}`` with its ``elif``s and ``else`` as (test, splice) pairs and the else
        splice, or None when a test or a branch is not spliceable."""
        arms: list[tuple[Test, Splice]] = []
        for arm in (statement, *statement.elif_):
            test = _test(arm.test, names)
            then = cls._of(arm.body, autoescape, names)
            if test is None or then is None:
                return None
            arms.append((test, then))
        otherwise = cls._of(statement.else_, autoescape, names)
        return None if otherwise is None else (arms, otherwise)

    def render(self, context: Mapping[str, Any], tracked: dict[Any, Any], max_chars: int) -> tuple[str, int]:
        """The template's output for ``context`` (the message's names), and the octets (UTF-8) of
        the values spliced in. ``tracked``: the message's ``track`` results by argument, shared by
        its templates (``track`` is called once per distinct URL). Raises (anything) when Jinja
        must render it instead: ``NotSpliceable``, the error of a missing name or a refused URL,
        or ``ValueError`` for output over ``max_chars`` (Jinja raises the limit error then).

        Every line of the output is at most ``longest_line`` + that many octets long: an output
        line holds fragments of literal lines (of one, without branches) and of values."""
        pieces = self.pieces
        out = [pieces[0]]
        autoescape = self.autoescape
        spliced = 0
        for i, (kind, key, detail) in enumerate(self.gaps, 1):
            if kind == _BRANCH:
                arms, chosen = detail
                for test, then in arms:
                    if test(context):  # truthiness of plain values only (checked by the test)
                        chosen = then
                        break
                text, values = chosen.render(context, tracked, max_chars)
                spliced += values
                out.append(text)
                out.append(pieces[i])
                continue
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


def _splices_of(branch: tuple[list[tuple[Test, Splice]], Splice]) -> list[Splice]:
    arms, otherwise = branch
    return [then for _, then in arms] + [otherwise]


def _plain(value: Any) -> Any:
    if type(value) not in _PLAIN_TYPES:
        raise NotSpliceable  # a type of its own (``__eq__``, ``__bool__``): Jinja decides
    return value


def _test(node: nodes.Node, names: set[str]) -> Test | None:
    """A function of the context computing ``node`` as the code Jinja compiles from it would (for
    the expressions the module docstring lists), or None for any other expression."""
    kind = type(node)
    if kind is nodes.Const:
        value = node.value  # type: ignore[attr-defined]
        return (lambda context: value) if type(value) in _PLAIN_TYPES else None
    if kind in (nodes.Name, nodes.Getattr):
        gap = _gap(node)
        if gap is None:
            return None
        _, key, field = gap
        names.add(key)
        if field is None:
            return lambda context: _plain(context[key])

        def attribute(context: Mapping[str, Any]) -> Any:
            owner = context[key]
            if type(owner) not in _VIEWS:
                raise NotSpliceable
            return _plain(getattr(owner, field))

        return attribute
    if kind is nodes.Not:
        inner = _test(node.node, names)  # type: ignore[attr-defined]
        return None if inner is None else (lambda context: not inner(context))
    if kind in (nodes.And, nodes.Or):
        left, right = _test(node.left, names), _test(node.right, names)  # type: ignore[attr-defined]
        if left is None or right is None:
            return None
        if kind is nodes.And:
            return lambda context: left(context) and right(context)
        return lambda context: left(context) or right(context)
    if kind is nodes.Compare and len(node.ops) == 1 and node.ops[0].op in ("eq", "ne"):  # type: ignore[attr-defined]
        first, second = _test(node.expr, names), _test(node.ops[0].expr, names)  # type: ignore[attr-defined]
        if first is None or second is None:
            return None
        if node.ops[0].op == "eq":  # type: ignore[attr-defined]
            return lambda context: first(context) == second(context)
        return lambda context: first(context) != second(context)
    if kind is nodes.Call:
        call: nodes.Call = node  # type: ignore[assignment]
        method = call.node
        if (
            type(method) is not nodes.Getattr
            or method.attr not in ("startswith", "endswith")
            or call.kwargs
            or call.dyn_args is not None
            or call.dyn_kwargs is not None
            or len(call.args) != 1
            or type(call.args[0]) is not nodes.Const
            or type(call.args[0].value) is not str
        ):
            return None
        receiver, name, argument = _test(method.node, names), method.attr, call.args[0].value
        if receiver is None:
            return None

        def affix(context: Mapping[str, Any]) -> bool:
            text = receiver(context)
            if type(text) is not str:
                raise NotSpliceable  # None.startswith: Jinja's error, not ours
            return text.startswith(argument) if name == "startswith" else text.endswith(argument)

        return affix
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
