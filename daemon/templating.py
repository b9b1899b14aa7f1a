"""The Jinja2 sandbox every message template renders in, and the context templates may use.

Templates see exactly: ``contact`` (a read-only view of whitelisted fields), ``coupon``,
``campaign`` (id, name), ``landing_url``, ``track(url)``, ``unsubscribe_url`` and ``slot``.
``sample_context`` builds that context for validation; the renderer builds the same shape with
``message_context``. An undefined name or attribute is an error (StrictUndefined), never a blank.

Templates are read only from inside the templates directory: Jinja refuses ``..`` in a name, and
``ContainedLoader`` refuses any file whose real path (symbolic links followed, of the file or of a
directory on the way) is outside the real path of the templates directory, for the templates a
campaign names and for every ``{% include %}``, ``{% import %}`` and ``{% extends %}``. A link that
stays inside keeps working. Every template file is read by ``read_template``: at most 1 MiB, UTF-8,
else one located problem (``TemplateUnreadable``).
"""

from __future__ import annotations

import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import FunctionType, MethodType, TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, meta, nodes, pass_eval_context, select_autoescape
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError, TemplateNotFound
from jinja2.filters import do_center, do_format, do_indent, do_replace, sync_do_join
from jinja2.loaders import split_template_path
from jinja2.nodes import EvalContext
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

from topslot.ages import age_on
from topslot.campaign import Campaign
from topslot.errors import Problem

CONTACT_FIELDS = (
    "external_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "gender",
    "age",
    "country",
    "locale",
    "timezone",
    "attributes",
)
CONTEXT_NAMES = ("contact", "coupon", "campaign", "landing_url", "track", "unsubscribe_url", "slot")
HTML_EXTENSIONS = ("html", "htm", "html.j2")
MAX_SEQUENCE = 100_000  # longest string/list a template may build with '*' (or pad to, with a width)
MAX_TEXT = 1_000_000  # longest string one operation ('+', '~', join, replace, indent) may build
MAX_EXPONENT = 100
_TICK_EVERY = 1024  # range() items between two deadline checks
_WIDTHS = re.compile(r"\d+")
SAMPLE_TRACKING_BASE = "https://t.example.com"


class AttributesView(Mapping[str, Any]):
    """Read-only imported attributes; ``contact.attributes.tier`` and ``['tier']`` both work."""

    __slots__ = ("_data",)
    template_label = "contact.attributes"

    def __init__(self, data: Mapping[str, Any] | None = None):
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"AttributesView({sorted(self._data)})"


class ContactView:
    """What a template may know about a contact: whitelisted fields only, read-only."""

    __slots__ = CONTACT_FIELDS
    template_label = "contact"

    def __init__(self, **fields: Any):
        unknown = set(fields) - set(CONTACT_FIELDS)
        if unknown:
            raise TypeError(f"not a contact field: {', '.join(sorted(unknown))}")
        for name in CONTACT_FIELDS:
            object.__setattr__(self, name, fields.get(name))
        object.__setattr__(self, "attributes", AttributesView(fields.get("attributes")))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a contact view is read-only")

    def __repr__(self) -> str:
        return f"ContactView(external_id={self.external_id!r})"  # type: ignore[attr-defined]


_COPIED_FIELDS = tuple(f for f in CONTACT_FIELDS if f not in ("age", "attributes"))
_set_field = object.__setattr__


def contact_view(contact: Any, today: date) -> ContactView:
    """What templates see of a stored contact: any object with the contact columns as attributes
    (a database row, a dispatcher's recipient); the age comes from the birth date when known.
    (Built field by field, as ``ContactView(**fields)`` would: it runs for every message sent.)"""
    view = ContactView.__new__(ContactView)
    for name in _COPIED_FIELDS:
        _set_field(view, name, getattr(contact, name))
    birth: date | None = contact.birth_date
    _set_field(view, "age", age_on(birth, today) if birth is not None else contact.age)
    _set_field(view, "attributes", AttributesView(contact.attributes))
    return view


class CampaignView:
    """What a template may know about its campaign."""

    __slots__ = ("id", "name")
    template_label = "campaign"

    def __init__(self, id: str, name: str):
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "name", name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a campaign view is read-only")


_VIEW_FIELDS: dict[type, frozenset[str]] = {
    ContactView: frozenset(ContactView.__slots__),
    CampaignView: frozenset(CampaignView.__slots__),
}
"""The fields of the read-only views templates see, by view type: ``TemplateSandbox.getattr`` returns
them without the sandbox's per-access safety checks (public slots of our own immutable classes, which
the checks always let through), since every message reads some of them."""


F = TypeVar("F", bound=Callable[..., Any])
_BUILTIN_METHOD = type("".startswith)
_STR_METHODS = frozenset(name for name in dir(str) if not name.startswith("_")) - {"format", "format_map"}
"""The ``str`` methods ``TemplateSandbox.getattr`` hands out without the sandbox's per-access checks
(which always allow a public method of an immutable built-in type); ``format`` and ``format_map``
still go through them, to be wrapped (``wrap_str_format``)."""

_PLAIN_FUNCTIONS: set[Callable[..., Any]] = set()
"""Functions of ours that templates call on every message (``template_function``)."""


def template_function(function: F) -> F:
    """Mark a function (or method) of ours that templates call as safe to call directly from the
    sandbox: it needs no context (no ``pass_context``), never raises ``StopIteration``, is not
    ``unsafe``; ``TemplateSandbox.call`` then skips the sandbox's per-call inspection. Returns it."""
    _PLAIN_FUNCTIONS.add(function)
    return function


class TemplateUndefined(StrictUndefined):
    """StrictUndefined whose message names the template variable (``'contact' has no attribute 'x'``)."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        obj, name = self._undefined_obj, self._undefined_name
        label = getattr(type(obj), "template_label", None)
        if label is None:
            return str(super()._undefined_message)
        if isinstance(obj, AttributesView):
            return (
                f"'{label}' has no attribute {name!r}; attributes differ between contacts, so write "
                f"{{{{ contact.attributes.{name} | default('') }}}} or test it with 'is defined'"
            )
        available = ", ".join(type(obj).__slots__)
        return f"'{label}' has no attribute {name!r} (it has: {available})"


class RenderLimitError(SecurityError):
    """A render ran past its deadline or would build more text than allowed."""


_DEADLINE: ContextVar[float | None] = ContextVar("topslot_render_deadline", default=None)


def set_deadline(deadline: float | None) -> object:
    """Bound the renders of this thread/task to ``time.monotonic()`` ≤ ``deadline``; returns a token
    for ``reset_deadline``. The sandbox checks it on every call, attribute access and range step."""
    return _DEADLINE.set(deadline)


def reset_deadline(token: object) -> None:
    _DEADLINE.reset(token)  # type: ignore[arg-type]


def check_deadline() -> None:
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise RenderLimitError("the template took too long to render (time limit exceeded)")


def _check_size(size: int, what: str, limit: int = MAX_TEXT) -> None:
    if size > limit:
        raise RenderLimitError(f"{what} would build more than {limit:,} characters")


def _check_widths(fmt: str, what: str) -> None:
    """Refuse a format string whose field widths/precisions could pad past MAX_SEQUENCE."""
    if "*" in fmt and "%" in fmt:
        raise RenderLimitError(f"{what}: '*' widths are not allowed in templates")
    for number in _WIDTHS.findall(fmt):
        if len(number) > 6 or int(number) > MAX_SEQUENCE:
            raise RenderLimitError(f"{what}: a width or precision above {MAX_SEQUENCE:,}")


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


def bounded_range(*args: int) -> Iterator[int]:
    """``range`` for templates: at most MAX_RANGE items, and the render deadline checked as it runs,
    so nested loops with empty bodies still stop in time."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise RenderLimitError(f"range() of more than {MAX_RANGE:,} items")
    return _ticking(rng)


def _ticking(items: Iterable[int]) -> Iterator[int]:
    for i, item in enumerate(items):
        if not i % _TICK_EVERY:
            check_deadline()
        yield item


def bounded_center(value: Any, width: int = 80) -> str:
    _check_size(int(width), "center()", MAX_SEQUENCE)
    return do_center(value, width)


def bounded_indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    pad = len(width) if isinstance(width, str) else int(width)
    _check_size(len(s) + pad * (s.count("\n") + 1), "indent()")
    return do_indent(s, width, first, blank)


def bounded_format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_widths(str(value), "format()")
    return do_format(value, *args, **kwargs)


@pass_eval_context
def bounded_replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    text = str(s)
    hits = text.count(str(old)) if old else len(text) + 1
    if count is not None:
        hits = min(hits, max(int(count), 0))
    _check_size(len(text) + hits * len(str(new)), "replace()")
    return do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def bounded_join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    items = list(value)
    if attribute is None:
        _check_size(sum(_text_len(x) for x in items) + len(d) * len(items), "join()")
    result = sync_do_join(eval_ctx, items, d, attribute)
    _check_size(len(result), "join()")
    return result


_PADDING_METHODS = {"center", "ljust", "rjust", "zfill"}


def _check_str_method(method: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Size checks for the str methods that can build big strings from small inputs; returns the
    arguments to call with (an iterable given to join() is consumed here, so a list replaces it)."""
    name, text = method.__name__, method.__self__
    if name in _PADDING_METHODS and args and isinstance(args[0], int):
        _check_size(args[0], f"{name}()", MAX_SEQUENCE)
    elif name == "expandtabs":
        size = int(args[0]) if args else 8
        _check_size(len(text) + text.count("\t") * size, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        hits = text.count(args[0]) if args[0] else len(text) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            hits = min(hits, args[2])
        _check_size(len(text) + hits * len(args[1]), "replace()")
    elif name == "join" and args:
        items = list(args[0])
        _check_size(sum(_text_len(x) for x in items) + len(text) * len(items), "join()")
        return (items, *args[1:])
    return args


class BoundedCodeGenerator(CodeGenerator):
    """Compiles '~' through ``environment.checked_concat`` so concatenations are size-checked."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.checked_concat({func_name}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """The Jinja2 sandbox (no mutation of lists/dicts), also bounding what a template can build.

    '*', '**', '+', '%' and '~' refuse results above MAX_SEQUENCE/MAX_TEXT; padding widths, replace,
    join and indent are checked before they run; ``range`` is capped and checks the render deadline
    (``set_deadline``), as does every call and attribute access.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = BoundedCodeGenerator

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.globals["range"] = bounded_range
        self.filters.update(
            center=bounded_center,
            indent=bounded_indent,
            format=bounded_format,
            replace=bounded_replace,
            join=bounded_join,
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple | bytes) and isinstance(times, int):
                    if len(seq) * times > MAX_SEQUENCE:
                        raise SecurityError(f"'*' would build more than {MAX_SEQUENCE} items")
                    if isinstance(seq, list | tuple):
                        _check_size(sum(_text_len(x) for x in seq if isinstance(x, str)) * times, "'*'")
        elif operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent above {MAX_EXPONENT}")
        elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _check_size(len(left) + len(right), "'+'")
        elif operator == "%" and isinstance(left, str):
            _check_widths(left, "'%' formatting")
        return super().call_binop(context, operator, left, right)

    def checked_concat(self, join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        _check_size(sum(_text_len(p) for p in parts), "'~'")
        return join(parts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_deadline()
        kind = type(obj)
        if kind is str:
            if attribute in _STR_METHODS:  # what the sandbox would give: a public, non-format method
                return getattr(obj, attribute)
        else:
            fields = _VIEW_FIELDS.get(kind)
            if fields is not None and attribute in fields:  # a view's own field: what the sandbox would allow
                return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_widths(str(value.__self__), "str.format()")
        return wrapped

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        check_deadline()
        kind = type(__obj)
        if kind is _BUILTIN_METHOD and type(__obj.__self__) is str:  # a str method: every message calls some
            args = _check_str_method(__obj, args)
            if not kwargs:  # what super().call does for it: safe, no context to pass, never StopIteration
                return __obj(*args)
        elif (
            kind is MethodType
            and __obj.__func__ in _PLAIN_FUNCTIONS
            or kind is FunctionType
            and __obj in _PLAIN_FUNCTIONS
        ) and not kwargs:
            return __obj(*args)  # ``track`` and the like: ours, safe, take no context
        elif isinstance(getattr(__obj, "__self__", None), str) and callable(__obj):
            args = _check_str_method(__obj, args)  # a str subclass's method (Markup)
        return super().call(__context, __obj, *args, **kwargs)


class TemplateOutsideRoot(TemplateNotFound):
    """A template name under the templates directory whose real path (symbolic links followed) is
    outside it. A ``TemplateNotFound``, so Jinja treats it as absent (``ignore missing`` skips it)."""

    def __init__(self, name: str):
        super().__init__(name, f"template '{name}' leads outside the templates directory (through a symbolic link)")


def contained_template_path(root: Path | str, name: str) -> str | None:
    """The real path of template ``name`` under ``root`` (symbolic links resolved), or None if there
    is no such file. ``TemplateOutsideRoot`` if that real path is outside the real path of ``root``;
    ``TemplateNotFound`` for a name with ``..`` (Jinja's own rule)."""
    filename = posixpath.join(os.fspath(root), *split_template_path(name))
    real = os.path.realpath(filename)
    if not _is_inside(real, os.path.realpath(root)):
        raise TemplateOutsideRoot(name)
    return real if os.path.isfile(real) else None


MAX_TEMPLATE_BYTES = 1024 * 1024
"""A template file larger than this is refused unread (the limit of a campaign file, too)."""


class TemplateUnreadable(TemplateError):
    """A template file that cannot be used as a template: unreadable, too large, or not UTF-8 text.
    ``problem`` says which file, where, and why, in one line."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def read_template(real: str, display: str) -> str:
    """The text of the template file ``real`` (``contained_template_path``): at most
    ``MAX_TEMPLATE_BYTES``, UTF-8. ``TemplateUnreadable`` otherwise, located at ``display`` (how
    messages name the file: ``templates/<name>``)."""
    try:
        with open(real, "rb") as f:
            raw = f.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise TemplateUnreadable(Problem(display, 1, 1, f"cannot read the template: {exc.strerror or exc}")) from None
    if len(raw) > MAX_TEMPLATE_BYTES:
        message = f"the template is larger than {MAX_TEMPLATE_BYTES >> 10} KiB, the limit here; is it the right file?"
        raise TemplateUnreadable(Problem(display, 1, 1, message))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = "the template is not UTF-8 text; save it as UTF-8"
        raise TemplateUnreadable(Problem(display, line, column, message)) from None


def _is_inside(path: str, root: str) -> bool:
    """Whether the absolute ``path`` is ``root`` or below it (the root itself is no file: not found)."""
    return os.path.commonpath([path, root]) == root


@dataclass(frozen=True, slots=True)
class TemplateRead:
    """One template file as the loader read it: its text and its mtime (``st_mtime_ns``)."""

    text: str
    mtime_ns: int


_READS: ContextVar[dict[str, TemplateRead] | None] = ContextVar("topslot_template_reads", default=None)


@contextmanager
def recording_reads() -> Iterator[dict[str, TemplateRead]]:
    """Every template file a ``ContainedLoader`` reads inside the block (in this thread or task),
    by template name: the campaign version is computed from them (``templates_used``)."""
    reads: dict[str, TemplateRead] = {}
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def templates_used(env: Environment, reads: dict[str, TemplateRead], roots: Iterable[str],
                   inline: Iterable[str] = ()) -> dict[str, TemplateRead]:  # fmt: skip
    """Every template a campaign uses: those it names (``roots``), those named by a literal in the
    templates ``inline`` in the campaign file (the email subject), and, from each of them on, every
    template included, imported or extended by a literal name, read through ``env``'s loader into
    ``reads`` (inside ``recording_reads``) unless read already; plus whatever else ``reads`` holds
    (a template included by a computed name, read while the campaign was checked). A template that
    cannot be read is left out (a check reports it, or a conditional ``ignore missing`` skips it)."""
    pending = list(roots) + [name for text in inline for name in _referenced(env, text)]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in reads and env.loader is not None:
            token = _READS.set(reads)
            try:
                env.loader.get_source(env, name)
            except TemplateError:
                continue
            finally:
                _READS.reset(token)
        if name in reads:
            pending.extend(_referenced(env, reads[name].text))
    return dict(reads)


def _referenced(env: Environment, text: str) -> list[str]:
    """The template names ``text`` includes, imports or extends literally (none if it does not parse)."""
    try:
        return [name for name in meta.find_referenced_templates(env.parse(text)) if name is not None]
    except TemplateError:
        return []


class ContainedLoader(FileSystemLoader):
    """``FileSystemLoader`` that reads a template only if its real path is inside the real path of
    the templates directory (checked before the file is opened, and the resolved file is the one
    read). Names keep their usual meaning, so error messages show ``templates/<name>``."""

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        for searchpath in self.searchpath:
            real = contained_template_path(searchpath, template)
            if real is not None:
                break
        else:
            raise TemplateNotFound(template)
        display = os.path.normpath(posixpath.join(searchpath, *split_template_path(template)))
        contents = read_template(real, display)
        mtime_ns = os.stat(real).st_mtime_ns
        mtime = mtime_ns / 1e9
        if (reads := _READS.get()) is not None:
            reads[template] = TemplateRead(contents, mtime_ns)

        def uptodate() -> bool:
            try:
                return os.stat(real).st_mtime_ns / 1e9 == mtime
            except OSError:
                return False

        return contents, display, uptodate


def make_environment(templates_dir: Path | str) -> TemplateSandbox:
    """The sandbox for one templates directory: strict undefined, HTML autoescape by extension,
    templates read only from inside the directory (``ContainedLoader``)."""
    return TemplateSandbox(
        loader=ContainedLoader(os.fspath(templates_dir)),
        undefined=TemplateUndefined,
        autoescape=select_autoescape(enabled_extensions=HTML_EXTENSIONS, default_for_string=False, default=False),
        auto_reload=False,
    )


def message_context(
    *,
    contact: ContactView,
    coupon: str,
    campaign: CampaignView,
    landing_url: str,
    track: Callable[[str], str],
    unsubscribe_url: str | None,
    slot: str,
) -> dict[str, Any]:
    """The exact names a template sees; the renderer and validation both build it here.
    ``unsubscribe_url`` None: left out, for a template known never to name it (a use would be
    undefined, an error: never a blank link)."""
    context = {
        "contact": contact,
        "coupon": coupon,
        "campaign": campaign,
        "landing_url": landing_url,
        "track": track,
        "unsubscribe_url": unsubscribe_url,
        "slot": slot,
    }
    if unsubscribe_url is None:
        del context["unsubscribe_url"]
    return context


def sample_contact() -> ContactView:
    return ContactView(
        external_id="sample-0001",
        first_name="Mei",
        last_name="Chen",
        email="mei.chen@example.com",
        phone="+8613800138000",
        gender="female",
        age=38,
        country="CN",
        locale="zh-CN",
        timezone="Asia/Shanghai",
        attributes={},
    )


def sample_track(base_url: str = SAMPLE_TRACKING_BASE) -> Callable[[str], str]:
    def track(url: str) -> str:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"track() needs an http(s) URL, got {url!r}")
        return f"{base_url}/c/sample?u={quote(url, safe='')}"

    return track


def sample_context(
    campaign: Campaign, channel: str, *, tracking_base_url: str = SAMPLE_TRACKING_BASE
) -> dict[str, Any]:
    """A context shaped like the renderer's, with a sample contact, for validating templates."""
    return sample_context_for(campaign.id, campaign.name, campaign.landing_url(channel), tracking_base_url)


def sample_context_for(
    campaign_id: str, campaign_name: str, landing_url: str, tracking_base_url: str = SAMPLE_TRACKING_BASE
) -> dict[str, Any]:
    """``sample_context`` from loose values (used while the campaign itself is still invalid)."""
    return message_context(
        contact=sample_contact(),
        coupon="SAMPLE7K2Q9X",
        campaign=CampaignView(campaign_id, campaign_name),
        landing_url=landing_url,
        track=sample_track(tracking_base_url),
        unsubscribe_url=f"{tracking_base_url}/u/sample-token",
        slot="07:30",
    )


def template_frame(tb: TracebackType | None, filenames: set[str] | None = None) -> tuple[str, int] | None:
    """(template file, line) of the innermost template frame in a render traceback.

    Jinja rewrites render tracebacks so that template frames carry the template's file name and
    line. ``filenames`` limits the search to known template files; by default any ``.j2``/``.html``
    style file that is not Python counts.
    """
    found: tuple[str, int] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if (filenames is not None and filename in filenames) or (
            filenames is None and not filename.endswith(".py") and not filename.startswith("<")
        ):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
