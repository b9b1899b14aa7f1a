"""Check the templates a campaign names: they exist inside the templates directory (also once
symbolic links are followed), compile, and render with a sample contact."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from jinja2 import Environment, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from topslot.campaign import Campaign
from topslot.channel import SPECS
from topslot.errors import Problem
from topslot.rendering.bounds import render_checked
from topslot.templating import (
    TemplateOutsideRoot,
    TemplateUnreadable,
    contained_template_path,
    make_environment,
    sample_context,
    sample_context_for,
    template_frame,
)
from topslot.yaml_source import YamlDocument

# (channel, key) of every template file a campaign can name, in content.<channel>.<key>
TEMPLATE_KEYS = tuple((name, key) for name, spec in SPECS.items() for key in spec.templates)
OPT_OUT_KEYS = {(name, key) for name, spec in SPECS.items() for key in spec.opt_out_templates}  # show unsubscribe_url
_OUTSIDE = (
    "is a symbolic link (or is under one) to a file outside the templates directory; "
    "copy the file into the templates directory instead"
)


def check_templates(
    doc: YamlDocument, campaign: Campaign | None, templates_dir: Path, env: Environment | None = None
) -> list[Problem]:
    """Problems with the templates and the email subject named in ``doc`` (valid campaign or not)."""
    env = env or make_environment(templates_dir)
    content = doc.get(("content",))
    if not isinstance(content, dict):
        return []
    problems: list[Problem] = []
    for channel, key in TEMPLATE_KEYS:
        name = doc.get(("content", channel, key))
        if isinstance(name, str) and name.strip():
            context = _context(doc, campaign, channel)
            problems += _check_file(doc, env, templates_dir, ("content", channel, key), name, context)
    subject = doc.get(("content", "email", "subject"))
    if isinstance(subject, str) and subject:
        problems += _check_subject(doc, env, subject, _context(doc, campaign, "email"))
    return sorted(set(problems))


def _context(doc: YamlDocument, campaign: Campaign | None, channel: str) -> dict[str, Any]:
    if campaign is not None:
        return sample_context(campaign, channel)
    url = doc.get(("landing_page", "url"))
    return sample_context_for(
        str(doc.get(("id",), "sample-campaign")),
        str(doc.get(("name",), "Sample campaign")),
        url if isinstance(url, str) and url.startswith(("http://", "https://")) else "https://shop.example.com/",
    )


def _check_file(
    doc: YamlDocument,
    env: Environment,
    templates_dir: Path,
    path: tuple[str, ...],
    name: str,
    context: dict[str, Any],
) -> list[Problem]:
    where = doc.position_of(path)
    label = ".".join(path)
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        return [doc.problem(where, f"{label}: '{name}' must be a path inside the templates directory")]
    file = templates_dir / name
    try:
        real = contained_template_path(templates_dir, name)
    except TemplateOutsideRoot:
        return [doc.problem(where, f"{label}: '{name}' {_OUTSIDE}")]
    if real is None:
        return [doc.problem(where, f"{label}: template '{name}' not found (looked for {file})")]
    try:
        template = env.get_template(name)
    except TemplateSyntaxError as exc:
        return [_syntax_problem(exc, str(file))]
    except TemplateUnreadable as exc:  # too large, or not UTF-8
        return [exc.problem]
    except TemplateNotFound:  # changed since the check above
        return [doc.problem(where, f"{label}: template '{name}' not found (looked for {file})")]
    try:
        output = render_checked(template, context)  # bounded: a slow or huge template fails the load
    except Exception as exc:  # noqa: BLE001 - any render failure is reported, located
        return [_render_problem(exc, fallback=(doc.display_path, where), prefix=f"{label}: ")]
    if path[1:] in OPT_OUT_KEYS and context["unsubscribe_url"] not in output:
        return [
            Problem(
                str(file),
                1,
                1,
                "the email never shows {{ unsubscribe_url }}; every marketing email needs an opt-out link",
            )
        ]
    return []


def _check_subject(doc: YamlDocument, env: Environment, subject: str, context: dict[str, Any]) -> list[Problem]:
    where = doc.position_of(("content", "email", "subject"))
    try:
        render_checked(env.from_string(subject), context)
    except TemplateSyntaxError as exc:
        return [doc.problem(where, f"content.email.subject: template syntax error: {exc.message}")]
    except Exception as exc:  # noqa: BLE001
        return [doc.problem(where, f"content.email.subject: {_render_message(exc)}")]
    return []


def _syntax_problem(exc: TemplateSyntaxError, fallback_file: str) -> Problem:
    return Problem(exc.filename or fallback_file, exc.lineno or 1, 1, f"template syntax error: {exc.message}")


def _render_problem(exc: Exception, fallback: tuple[str, tuple[int, int]], prefix: str) -> Problem:
    if isinstance(exc, TemplateSyntaxError):  # an included template failed to compile
        return _syntax_problem(exc, fallback[0])
    if isinstance(exc, TemplateUnreadable):  # ... or to be read
        return exc.problem
    frame = template_frame(exc.__traceback__)
    if frame is not None:
        return Problem(frame[0], frame[1], 1, _render_message(exc))
    return Problem(fallback[0], fallback[1][0], fallback[1][1], prefix + _render_message(exc))


def _render_message(exc: Exception) -> str:
    if isinstance(exc, UndefinedError):
        return str(exc)
    if isinstance(exc, TemplateOutsideRoot):
        return f"included template '{exc.name}' {_OUTSIDE}"
    if isinstance(exc, TemplateNotFound):
        return f"included template '{exc.name}' not found"
    if isinstance(exc, SecurityError):
        return f"not allowed in the template sandbox: {exc}"
    return f"{type(exc).__name__}: {exc}"
