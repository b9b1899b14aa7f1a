"""A campaign's templates compiled once per load, rendered per recipient.

``compile_campaign`` prepares and compiles every template of a campaign (CSS inlined, links
tracked, text part derived when missing), checks the compliance settings, and renders each template
once with the sample contact under the render limits, so a template that is too slow or too big
fails the load, not the daemon. ``CompiledCampaign.render_email`` / ``render_text`` then cost one
template render each.

An SMS body ends with the opt-out line of the recipient's country (``compliance.sms_opt_out``)
unless the template already shows it. A segmented channel's body (SMS) is also rendered for two
sample recipients (China/zh-CN and the United States/en-US) with short links as long as real ones
and their opt-out lines: one over ``MAX_SMS_SEGMENTS`` segments fails the load.

Coupons, tracked URLs and unsubscribe links are made elsewhere (``topslot.coupons``,
``topslot.links``): the caller passes them in as plain values and a ``track`` callable. A text
template (SMS, IM) that never names ``unsubscribe_url`` (found from its syntax tree at compile time;
one that includes, imports or extends another counts as naming it) is rendered without it, so its
signed token is never made: the name is simply absent, and StrictUndefined would refuse a use.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from jinja2 import Template, TemplateError, TemplateNotFound, meta

from topslot.campaign import Campaign, ImContent
from topslot.channel import SPECS, spec_of
from topslot.errors import InvalidInput, Problem
from topslot.links.factory import DeliveryLinks, placeholder_short_track
from topslot.rendering.bounds import DEFAULT_LIMITS, BoundedTemplate, RenderLimits, render_checked
from topslot.rendering.compliance import (
    Footer,
    ad_prefixed,
    footer_for,
    insert_before_body_end,
    missing_settings,
    recipient_country,
    with_opt_out,
)
from topslot.rendering.email_sources import SourceError, prepare_email_sources, prepare_text_source
from topslot.rendering.html_text import tidy
from topslot.rendering.link_rewrite import TRACKED_HREF_FILTER, tracked_href
from topslot.rendering.mime import MimeAssembler, list_unsubscribe
from topslot.rendering.sms_segments import sms_segments
from topslot.rendering.splice import Splice
from topslot.settings import Compliance
from topslot.templating import (
    SAMPLE_TRACKING_BASE,
    CampaignView,
    ContactView,
    TemplateOutsideRoot,
    TemplateSandbox,
    TemplateUnreadable,
    contained_template_path,
    make_environment,
    message_context,
    read_template,
    sample_contact,
    sample_track,
    template_function,
)

template_function(DeliveryLinks.track)  # called by (nearly) every message's template: no sandbox inspection

SAMPLE_UNSUBSCRIBE = "https://t.example.com/u/sample-token"
MAX_LINE_OCTETS = 998  # RFC 5322, without the CRLF
SPLICE = True
"""Whether spliceable templates (email, SMS and IM bodies, IM cards) are rendered without Jinja
(benches set it to 0 to compare)."""
MAX_SMS_SEGMENTS = 10  # more is refused by providers (Twilio: 1,600 characters) or split by carriers


class LinksOfMessage(Protocol):
    """What rendering needs of a message's links: ``topslot.links.factory.DeliveryLinks`` (sending)
    or a ``MessageLinks`` (previews, samples, tests)."""

    def track(self, url: str, /) -> str: ...

    @property
    def unsubscribe_url(self) -> str: ...

    @property
    def unsubscribe_mailto(self) -> str | None: ...

    @property
    def open_pixel_url(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class MessageLinks:
    """The per-message URLs as plain values (previews, samples, tests); sending passes ``DeliveryLinks``."""

    track: Callable[[str], str]  # destination URL → tracked URL
    unsubscribe_url: str  # https one-click opt-out (RFC 8058 POST target; GET shows a page)
    unsubscribe_mailto: str | None = None  # mailto: alternative for List-Unsubscribe
    open_pixel_url: str | None = None  # None: no open tracking for this message


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """One recipient's email, before MIME: the parts and the per-recipient headers."""

    subject: str
    html: str
    text: str
    headers: tuple[tuple[str, str], ...]  # (name, value) per-recipient headers (List-Unsubscribe)
    short_lines: bool = False  # every line of html and text is known to be ≤ 998 octets (not measured again)


class CompiledEmail:
    """The email templates of one campaign, ready to render."""

    def __init__(
        self,
        *,
        subject: Template,
        html: Template,
        text: Template,
        text_derived: bool,
        footer: Footer,
        ad_prefix: str | None,
        limits: RenderLimits,
        splices: tuple[Splice, Splice, Splice] | None = None,
    ):
        """``splices``: the subject, HTML and text templates as ``Splice``s, when all three are
        spliceable (``Splice.of``); their messages are then rendered without Jinja."""
        self.subject = BoundedTemplate(subject, limits)
        self.html = BoundedTemplate(html, limits)
        self.text = BoundedTemplate(text, limits)
        self.text_derived = text_derived
        self.footer = footer
        self.ad_prefix = ad_prefix
        self.limits = limits
        self.splices = splices
        self._text_footer_octets = _octets(footer.text)

    def render(self, context: dict[str, Any], links: LinksOfMessage, *, country: str | None) -> RenderedEmail:
        """One recipient's email: spliced when the templates allow it (the same strings Jinja
        renders), else rendered by Jinja; a message the splice cannot make (``Splice.render``
        raised) is rendered by Jinja, which raises the same error if there is one."""
        if self.splices is not None and SPLICE:
            subject_splice, html_splice, text_splice = self.splices
            tracked: dict[Any, Any] = {}
            most = self.limits.max_chars
            try:
                subject, _ = subject_splice.render(context, tracked, most)
                body, body_values = html_splice.render(context, tracked, most)
                text, text_values = text_splice.render(context, tracked, most)
            except Exception:  # noqa: BLE001, S110 - Jinja renders this message: same text or same error
                pass
            else:
                lines = (html_splice.longest_line + body_values, text_splice.longest_line + text_values)
                return self._finish(subject, body, text, links, country, lines)
        parent = self.html.parent(context)
        return self._finish(
            self.subject.render(parent), self.html.render(parent), self.text.render(parent), links, country
        )

    def _finish(
        self, subject: str, body: str, text: str, links: LinksOfMessage, country: str | None,
        lines: tuple[int, int] | None = None,
    ) -> RenderedEmail:  # fmt: skip
        """The rendered templates as sent: the subject on one line (ad prefix), the footers, the
        open pixel and the List-Unsubscribe header. ``lines``: bounds of the longest line of the
        HTML and the text, in octets, before the footers (from the splices), else None."""
        subject = " ".join(subject.split())  # one line, single spaces
        if self.ad_prefix and country == "CN":
            subject = ad_prefixed(subject, self.ad_prefix)
        tail = self.footer.html
        if links.open_pixel_url:
            pixel = html_lib.escape(links.open_pixel_url)
            tail += f'<img src="{pixel}" width="1" height="1" alt="" style="display:block;border:0;">'
        body = insert_before_body_end(body, tail)
        if self.text_derived:
            text = tidy(text)
        text += self.footer.text
        header = list_unsubscribe(links.unsubscribe_url, links.unsubscribe_mailto)
        short = (
            lines is not None
            and not self.text_derived  # tidy() reflows the text
            and lines[0] + _octets(tail) <= MAX_LINE_OCTETS
            and lines[1] + self._text_footer_octets <= MAX_LINE_OCTETS
        )
        return RenderedEmail(subject, body, text, (("List-Unsubscribe", header),), short)


def spliced(splice: Splice | None, context: dict[str, Any], tracked: dict[Any, Any], max_chars: int) -> str | None:
    """``splice``'s output for ``context``, or None when Jinja must render it (no splice, ``SPLICE``
    off, or the splice raised: Jinja then gives the same error, if it is one)."""
    if splice is None or not SPLICE:
        return None
    try:
        return splice.render(context, tracked, max_chars)[0]
    except Exception:  # noqa: BLE001 - Jinja renders this message: same text or same error
        return None


class CompiledText:
    """An SMS or IM body template, ready to render; ``opt_out``: the compliance settings whose
    ``sms_opt_out`` line (for the recipient's country) ends every body (SMS), None for none (IM);
    ``needs_unsubscribe``: whether the template may use ``unsubscribe_url`` (``names_unsubscribe``);
    ``splice``: the template as a ``Splice`` when it is spliceable (rendered without Jinja then)."""

    def __init__(
        self, template: Template, limits: RenderLimits, opt_out: Compliance | None = None, *,
        needs_unsubscribe: bool = True, splice: Splice | None = None,
    ):  # fmt: skip
        self.template = BoundedTemplate(template, limits)
        self.opt_out = opt_out
        self.needs_unsubscribe = needs_unsubscribe
        self.splice = splice

    def render(self, context: dict[str, Any]) -> str:
        body = spliced(self.splice, context, {}, self.template.limits.max_chars)
        if body is None:
            body = self.template.render(self.template.parent(context))
        return self.finish(body, context["contact"])

    def finish(self, body: str, contact: ContactView) -> str:
        """A rendered body as sent: stripped, ending with the opt-out line of the contact's country."""
        body = body.strip()
        if self.opt_out is not None:
            body = with_opt_out(body, self.opt_out.sms_opt_out_for(recipient_country(contact)))
        return body


@dataclass(frozen=True, slots=True)
class RenderedCard:
    """An IM message's card and template variables, rendered for one recipient."""

    title: str | None
    button: str
    link: str  # the tracked landing page
    variables: dict[str, str]


class CompiledCard:
    """The IM content's one-line template strings: card title, button label, template variables
    (``needs_unsubscribe`` as ``CompiledText``'s, for any of them), each keyed ``title``, ``button``
    or ``variables.<name>``; ``splices``: the spliceable ones as ``Splice``s by that key."""

    def __init__(
        self, title: Template | None, button: Template, variables: dict[str, Template], limits: RenderLimits, *,
        needs_unsubscribe: bool = True, splices: Mapping[str, Splice | None] | None = None,
    ):  # fmt: skip
        templates = {"title": title, "button": button} | {f"variables.{k}": v for k, v in variables.items()}
        splices = splices or {}
        self.lines = {
            key: (BoundedTemplate(template, limits), splices.get(key))
            for key, template in templates.items()
            if template is not None
        }
        self.needs_unsubscribe = needs_unsubscribe
        self.max_chars = limits.max_chars

    def render(self, context: dict[str, Any]) -> RenderedCard:
        parents: list[dict[str, Any]] = []  # built once, for the first line Jinja renders
        tracked: dict[Any, Any] = {}
        lines: dict[str, str] = {}
        for key, (template, splice) in self.lines.items():
            text = spliced(splice, context, tracked, self.max_chars)
            if text is None:
                if not parents:
                    parents.append(template.parent(context))
                text = template.render(parents[0])
            lines[key] = " ".join(text.split())
        return RenderedCard(
            title=lines.get("title"),
            button=lines["button"],
            link=context["track"](context["landing_url"]),
            variables={k.removeprefix("variables."): v for k, v in lines.items() if k.startswith("variables.")},
        )


class CompiledCampaign:
    """Everything needed to render a campaign's messages; build it with ``compile_campaign``."""

    def __init__(
        self,
        campaign: Campaign,
        email: CompiledEmail | None,
        texts: dict[str, CompiledText],
        assembler: MimeAssembler | None,
        card: CompiledCard | None = None,
    ):
        self.campaign = campaign
        self.email = email
        self.texts = texts  # "sms" / "im" → body
        self.assembler = assembler
        self.card = card  # IM
        self._view = CampaignView(campaign.id, campaign.name)
        self._landing: dict[str, str] = {channel: campaign.landing_url(channel) for channel in SPECS}

    def context(
        self,
        contact: ContactView,
        coupon: str | None,
        links: LinksOfMessage,
        slot: str,
        channel: str,
        *,
        unsubscribe: bool = True,
    ) -> dict[str, Any]:
        """The template context of one message (``coupon`` None: sent without one → empty text);
        ``unsubscribe=False``: without ``unsubscribe_url`` (for templates that never name it: its
        token is not signed)."""
        return message_context(
            contact=contact,
            coupon=coupon or "",
            campaign=self._view,
            landing_url=self._landing[channel],
            track=links.track,
            unsubscribe_url=links.unsubscribe_url if unsubscribe else None,
            slot=slot,
        )

    def render_email(self, contact: ContactView, coupon: str | None, links: LinksOfMessage, slot: str) -> RenderedEmail:
        if self.email is None:
            raise ValueError(f"campaign {self.campaign.id!r} has no email content")
        context = self.context(contact, coupon, links, slot, "email")
        return self.email.render(context, links, country=contact.country)  # type: ignore[attr-defined]

    def render_text(
        self, channel: str, contact: ContactView, coupon: str | None, links: LinksOfMessage, slot: str
    ) -> str:
        """The SMS or IM body for one recipient (an SMS with its country's opt-out line)."""
        compiled = self.texts.get(channel)
        if compiled is None:
            raise ValueError(f"campaign {self.campaign.id!r} has no {channel} content")
        return compiled.render(
            self.context(contact, coupon, links, slot, channel, unsubscribe=compiled.needs_unsubscribe)
        )

    def render_card(
        self, channel: str, contact: ContactView, coupon: str | None, links: LinksOfMessage, slot: str
    ) -> RenderedCard | None:
        """The IM card (title, button, tracked link) and template variables; None without IM content."""
        if self.card is None:
            return None
        return self.card.render(
            self.context(contact, coupon, links, slot, channel, unsubscribe=self.card.needs_unsubscribe)
        )


def sample_links(channel: str = "email") -> MessageLinks:
    """Links for sample renders; on a short-link channel (SMS) as long as real short links."""
    short = spec_of(channel).short_links
    return MessageLinks(
        track=placeholder_short_track(SAMPLE_TRACKING_BASE, "sample") if short else sample_track(),
        unsubscribe_url=SAMPLE_UNSUBSCRIBE,
        unsubscribe_mailto="mailto:unsubscribe@t.example.com?subject=sample-token",
    )


def sample_recipients() -> tuple[ContactView, ...]:
    """The sample contacts a segmented body is measured with: China (zh-CN) and the US (en-US)."""
    china = sample_contact()
    us = ContactView(
        external_id="sample-0002",
        first_name="Jennifer",
        last_name="Walker",
        email="jennifer.walker@example.com",
        phone="+12025550143",
        gender="female",
        age=41,
        country="US",
        locale="en-US",
        timezone="America/New_York",
        attributes={},
    )
    return china, us


def compile_campaign(
    campaign: Campaign,
    templates_dir: Path | str,
    compliance: Compliance,
    *,
    limits: RenderLimits = DEFAULT_LIMITS,
    inline_css: bool = True,
) -> CompiledCampaign:
    """Compile every template of ``campaign``; InvalidInput listing every problem found."""
    templates_dir = Path(templates_dir)
    env = make_environment(templates_dir)
    env.filters[TRACKED_HREF_FILTER] = tracked_href
    compiler = _Compiler(campaign, templates_dir, env, limits)
    email = compiler.email(compliance, inline_css) if campaign.content.email else None
    texts: dict[str, CompiledText] = {}
    for channel, spec in SPECS.items():
        content = getattr(campaign.content, channel) if not spec.mime else None
        if content is not None:
            opt_out = compliance if spec.opt_out_line else None
            text = compiler.text(content.body, channel, opt_out)
            if text is not None:
                texts[channel] = text
    card = compiler.card(campaign.content.im) if campaign.content.im else None
    if compiler.problems:
        raise InvalidInput(compiler.problems)
    assembler = None
    if campaign.content.email:
        assembler = MimeAssembler(
            from_=campaign.content.email.from_, reply_to=campaign.content.email.reply_to, campaign_id=campaign.id
        )
    return CompiledCampaign(campaign, email, texts, assembler, card)


class _Compiler:
    """Collects every problem of one campaign's templates instead of stopping at the first."""

    def __init__(self, campaign: Campaign, templates_dir: Path, env: TemplateSandbox, limits: RenderLimits):
        self.campaign = campaign
        self.templates_dir = templates_dir
        self.env = env
        self.limits = limits
        self.problems: list[Problem] = []
        self.contact = sample_contact()
        self.compiled = CompiledCampaign(campaign, None, {}, None)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, 1, 1, message))

    def source(self, name: str) -> str | None:
        pure = PurePosixPath(name)
        path = self.templates_dir / name
        real = None
        try:
            if not pure.is_absolute() and ".." not in pure.parts:
                real = contained_template_path(self.templates_dir, name)  # symbolic links may not lead out
        except TemplateOutsideRoot as exc:
            self.problem(str(path), exc.message or str(exc))
            return None
        except TemplateNotFound:
            pass
        if real is None:
            self.problem(str(path), f"template '{name}' not found in {self.templates_dir}")
            return None
        try:
            return read_template(real, str(path))
        except TemplateUnreadable as exc:
            self.problems.append(exc.problem)
            return None

    def build(self, source: str, name: str, filename: str) -> Template | None:
        """Compile ``source`` as template ``name`` (its extension picks autoescape) and render it
        once with the sample contact under the limits."""
        try:
            return self.env.template_class.from_code(
                self.env, self.env.compile(source, name, filename), self.env.make_globals(None), None
            )
        except TemplateError as exc:
            self.problem(filename, f"template error after preparing it: {exc}")
            return None

    def sample(self, template: Template, channel: str, where: str, contact: ContactView | None = None) -> str | None:
        links = sample_links(channel)
        context = self.compiled.context(contact or self.contact, "SAMPLE7K2Q9X", links, "07:30", channel)
        try:
            return render_checked(template, context, self.limits)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            self.problem(where, f"{type(exc).__name__}: {exc}")
            return None

    def email(self, compliance: Compliance, inline_css: bool) -> CompiledEmail | None:
        content = self.campaign.content.email
        assert content is not None
        for message in missing_settings(compliance):
            self.problem("topslot.yaml", message)
        html_source = self.source(content.html)
        text_source = self.source(content.text) if content.text else None
        if html_source is None or (content.text and text_source is None):
            return None
        html_file = str(self.templates_dir / content.html)
        try:
            sources = prepare_email_sources(html_source, text_source, inline_css=inline_css)
        except SourceError as exc:
            self.problem(html_file, str(exc))
            return None
        text_file = str(self.templates_dir / content.text) if content.text else html_file
        html = self.build(sources.html, _with_suffix(content.html, ".html"), html_file)
        text = self.build(sources.text, _with_suffix(content.text or content.html, ".txt"), text_file)
        subject = self.build(content.subject, "subject.txt", "content.email.subject")
        if html is None or text is None or subject is None:
            return None
        sample_html = self.sample(html, "email", html_file)
        sample_text = self.sample(text, "email", text_file)
        sample_subject = self.sample(subject, "email", "content.email.subject")
        if sample_html is None or sample_text is None or sample_subject is None or self.problems:
            return None
        html_name = _with_suffix(content.html, ".html")
        text_name = _with_suffix(content.text or content.html, ".txt")
        splices = (
            Splice.of(self.env, content.subject, "subject.txt"),
            Splice.of(self.env, sources.html, html_name),
            Splice.of(self.env, sources.text, text_name),
        )
        return CompiledEmail(
            splices=splices if all(splices) else None,  # type: ignore[arg-type]
            subject=subject,
            html=html,
            text=text,
            text_derived=sources.text_derived,
            footer=footer_for(compliance, sample_html, sample_text),
            ad_prefix=compliance.cn_ad_prefix if self.campaign.compliance.cn_ad_prefix else None,
            limits=self.limits,
        )

    def text(self, name: str, channel: str, opt_out: Compliance | None) -> CompiledText | None:
        source = self.source(name)
        if source is None:
            return None
        filename = str(self.templates_dir / name)
        prepared = prepare_text_source(source)
        template = self.build(prepared, _with_suffix(name, ".txt"), filename)
        if template is None or self.sample(template, channel, filename) is None:
            return None
        unsubscribe = names_unsubscribe(self.env, prepared)
        splice = Splice.of(self.env, prepared, _with_suffix(name, ".txt"))
        compiled = CompiledText(template, self.limits, opt_out, needs_unsubscribe=unsubscribe, splice=splice)
        if spec_of(channel).segmented:
            self.check_segments(compiled, channel, filename)
        return compiled

    def card(self, content: ImContent) -> CompiledCard | None:
        """The IM card's template strings, each compiled and rendered once with the sample contact."""
        parts: dict[str, Template | None] = {}
        strings = {"title": content.title, "button": content.button} | {
            f"variables.{k}": v for k, v in content.variables.items()
        }
        for key, text in strings.items():
            if text is None:
                parts[key] = None
                continue
            where = f"content.im.{key}"
            template = self.build(text, f"im-{key}.txt", where)
            if template is None or self.sample(template, "im", where) is None:
                return None
            parts[key] = template
        button = parts.pop("button")
        assert button is not None
        title = parts.pop("title")
        variables = {k.removeprefix("variables."): v for k, v in parts.items() if v is not None}
        unsubscribe = any(names_unsubscribe(self.env, text) for text in strings.values() if text is not None)
        splices = {key: Splice.of(self.env, text, f"im-{key}.txt") for key, text in strings.items() if text is not None}
        return CompiledCard(title, button, variables, self.limits, needs_unsubscribe=unsubscribe, splices=splices)

    def check_segments(self, compiled: CompiledText, channel: str, where: str) -> None:
        """A problem when a sample recipient's body (opt-out line included) is over MAX_SMS_SEGMENTS."""
        for contact in sample_recipients():
            body = self.sample(compiled.template.template, channel, where, contact)
            if body is None:
                return
            count = sms_segments(compiled.finish(body, contact))
            if count.segments > MAX_SMS_SEGMENTS:
                self.problem(
                    where,
                    f"the {spec_of(channel).label} for a sample recipient in {contact.country} "  # type: ignore[attr-defined]
                    f"({contact.locale}) is {count.segments} {count.encoding} segments with its opt-out line; "  # type: ignore[attr-defined]
                    f"at most {MAX_SMS_SEGMENTS} can be sent: shorten it",
                )


def names_unsubscribe(env: TemplateSandbox, source: str) -> bool:
    """Whether the template ``source`` may use ``unsubscribe_url``: it names it, or it includes,
    imports or extends another template (whose names are not looked at); True when it cannot be
    parsed (it then fails to compile anyway)."""
    try:
        tree = env.parse(source)
    except TemplateError:
        return True
    if any(True for _ in meta.find_referenced_templates(tree)):
        return True
    return "unsubscribe_url" in meta.find_undeclared_variables(tree)


def _octets(text: str) -> int:
    """The length of ``text`` in UTF-8."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _with_suffix(name: str, suffix: str) -> str:
    """A template name whose extension tells the sandbox whether to autoescape."""
    return f"{name}{suffix}" if not name.endswith(suffix) else name
