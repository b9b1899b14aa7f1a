"""The Jinja2 sandbox every message template renders in, and the context templates may use.

Templates see exactly: ``contact`` (a read-only view of whitelisted fields), ``coupon``,
``campaign`` (id, name), ``landing_url``, ``track(url)``, ``unsubscribe_url`` and ``slot``.
``sample_context`` builds that context for validation; the renderer builds the same shape with
``message_context``. An undefined name or attribute is an error (StrictUndefined), never a blank.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from daemon.campaign import Campaign

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
MAX_SEQUENCE = 100_000  # longest string/list a template may build with '*'
MAX_EXPONENT = 100
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


class CampaignView:
    """What a template may know about its campaign."""

    __slots__ = ("id", "name")
    template_label = "campaign"

    def __init__(self, id: str, name: str):
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "name", name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a campaign view is read-only")


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


class TemplateSandbox(SandboxedEnvironment):
    """The Jinja2 sandbox, also refusing '*' and '**' results big enough to exhaust memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple | bytes) and isinstance(times, int):
                    if len(seq) * times > MAX_SEQUENCE:
                        raise SecurityError(f"'*' would build more than {MAX_SEQUENCE} items")
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent above {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


def make_environment(templates_dir: Path | str) -> TemplateSandbox:
    """The sandbox for one templates directory: strict undefined, HTML autoescape by extension."""
    return TemplateSandbox(
        loader=FileSystemLoader(os.fspath(templates_dir)),
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
    unsubscribe_url: str,
    slot: str,
) -> dict[str, Any]:
    """The exact names a template sees; the renderer and validation both build it here."""
    return {
        "contact": contact,
        "coupon": coupon,
        "campaign": campaign,
        "landing_url": landing_url,
        "track": track,
        "unsubscribe_url": unsubscribe_url,
        "slot": slot,
    }


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
