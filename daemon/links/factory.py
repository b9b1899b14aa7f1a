"""Links for one message: what the renderer puts in ``track``, ``landing_url``, ``unsubscribe_url``,
the open pixel and the ``List-Unsubscribe`` header (pure).

Build one ``CampaignLinks`` per campaign (per dispatch batch, or longer: its ``LinkBook`` bounds its
own memory), then one ``DeliveryLinks`` per message::

    links = CampaignLinks(campaign, keyring, TrackingBase.parse(settings.tracking_base_url))
    msg = links.for_delivery(delivery_id, "email", tracking_allowed=contact_allows_tracking)
    html = template.render(track=msg.track, landing_url=msg.landing_url, unsubscribe_url=msg.unsubscribe_url, ...)
    pairs = links.book.pending()  # save before sending: topslot.store.links.save_links

A channel whose ``ChannelSpec.short_links`` is set (SMS) gets ``{base}/s/{code}`` short links
(``topslot.links.short``: 26 characters, nothing stored per message) instead of ``/c/{token}``; both
are the same click to the tracking server.

Tracking off (the campaign's ``tracking.clicks`` / ``tracking.opens`` false, or
``tracking_allowed=False`` for a contact without tracking consent, which turns off both):
``track(url)`` returns the normalised URL itself and ``open_pixel_url`` is None. The unsubscribe
links are always signed tokens: they are how the recipient leaves, not tracking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from topslot.channel import spec_of
from topslot.links.book import LinkBook
from topslot.links.keys import Keyring
from topslot.links.short import MAX_SHORT_DELIVERY_ID, placeholder_code, sign_short
from topslot.links.tokens import Signer
from topslot.links.tracking import (
    ROUTES,
    SHORT_ROUTE,
    TrackingBase,
    mailto_domain,
    open_pixel_url,
    short_url,
    tracked_url,
    unsubscribe_mailto,
    unsubscribe_url,
)
from topslot.links.urls import normalise_url
from topslot.links.verp import return_path


class TrackingFlags(Protocol):
    @property
    def clicks(self) -> bool: ...

    @property
    def opens(self) -> bool: ...


class LinkedCampaign(Protocol):
    """What links need of a campaign (``topslot.campaign.Campaign`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def tracking(self) -> TrackingFlags: ...

    def landing_url(self, channel: str) -> str: ...


class CampaignLinks:
    """Per-campaign link state: keyring, tracking base, the campaign's flags, landing URLs and book."""

    def __init__(
        self,
        campaign: LinkedCampaign,
        keyring: Keyring,
        base: TrackingBase | str,
        *,
        book: LinkBook | None = None,
        mail_domain: str | None = None,
        verp_local: str | None = None,
    ):
        """``mail_domain``: where ``mailto:`` unsubscribes (and, with ``verp_local``, VERP return
        paths ``{verp_local}+{token}@{mail_domain}``) go; default: the tracking host, no VERP."""
        self.campaign = campaign
        self.keyring = keyring
        self.signer = Signer(keyring)  # the active key's, for every message of this campaign
        self.base = base if isinstance(base, TrackingBase) else TrackingBase.parse(base)
        self.book = book if book is not None else LinkBook(campaign.id)
        self.mail_domain = mailto_domain(self.base, mail_domain)
        self.verp_local = verp_local if mail_domain is not None else None
        self._tracked_prefixes = self.base.route_prefixes()
        self._landing: dict[str, str] = {}

    def landing_url(self, channel: str) -> str:
        """The landing page with this channel's UTM parameters (computed once per channel)."""
        url = self._landing.get(channel)
        if url is None:
            url = self._landing[channel] = self.campaign.landing_url(channel)
        return url

    def for_delivery(self, delivery_id: int, channel: str, *, tracking_allowed: bool = True) -> DeliveryLinks:
        """The links of one message; ``tracking_allowed=False``: this contact is not tracked at all."""
        return DeliveryLinks(self, delivery_id, channel, tracking_allowed)

    def is_tracking_url(self, url: str) -> bool:
        return url.startswith(self._tracked_prefixes)


_UNSIGNED = object()  # a token not signed yet


class DeliveryLinks:
    """Links for one delivery. Tokens are signed on first use only (an SMS never signs a pixel).
    (Remembered in slots rather than with ``functools.cached_property``, which takes a lock on
    every first read before Python 3.12: one object per message.)"""

    __slots__ = (
        "_links", "delivery_id", "channel", "clicks_tracked", "opens_tracked", "short_links",
        "_pixel", "_unsubscribe", "_mailto", "_token",
    )  # fmt: skip

    def __init__(self, links: CampaignLinks, delivery_id: int, channel: str, tracking_allowed: bool):
        self._links = links
        self.delivery_id = delivery_id
        self.channel = channel
        tracking = links.campaign.tracking
        spec = spec_of(channel)
        self.clicks_tracked = tracking_allowed and tracking.clicks
        self.opens_tracked = tracking_allowed and tracking.opens and spec.tracks_opens
        self.short_links = spec.short_links and delivery_id <= MAX_SHORT_DELIVERY_ID
        self._pixel: str | None | object = _UNSIGNED
        self._unsubscribe: str | None = None
        self._mailto: str | None = None
        self._token: str | None = None

    @property
    def landing_url(self) -> str:
        """The landing page with UTM parameters, untracked (templates write ``track(landing_url)``)."""
        return self._links.landing_url(self.channel)

    def track(self, url: str) -> str:
        """``url`` as a signed tracked link (recorded in the campaign's ``LinkBook``): a ``/s/`` short
        link on a channel with short links, else a ``/c/`` click token; the URL itself when clicks
        are not tracked; unchanged when it already is a tracking URL. ``InvalidLink`` (a ValueError)
        for anything but an absolute http(s) URL."""
        links = self._links
        if isinstance(url, str) and links.is_tracking_url(url):
            return url
        if not self.clicks_tracked:
            return normalise_url(url)
        key, _ = links.book.add(url)
        if self.short_links:
            return short_url(links.base, sign_short(links.keyring, self.delivery_id, key))
        return tracked_url(links.base, links.signer.sign("click", self.delivery_id, key))

    @property
    def open_pixel_url(self) -> str | None:
        """``{base}/o/{token}.gif`` for email with opens tracked, else None."""
        pixel = self._pixel
        if pixel is _UNSIGNED:
            pixel = self._pixel = (
                open_pixel_url(self._links.base, self._links.signer.sign("open", self.delivery_id))
                if self.opens_tracked
                else None
            )
        return pixel  # type: ignore[return-value]

    @property
    def unsubscribe_url(self) -> str:
        """The one-click unsubscribe page (GET shows it, POST unsubscribes: RFC 8058)."""
        url = self._unsubscribe
        if url is None:
            url = self._unsubscribe = unsubscribe_url(self._links.base, self._unsubscribe_token)
        return url

    @property
    def unsubscribe_mailto(self) -> str:
        """``mailto:unsubscribe+{token}@{domain}`` for the ``List-Unsubscribe`` header."""
        mailto = self._mailto
        if mailto is None:
            mailto = self._mailto = unsubscribe_mailto(self._links.mail_domain, self._unsubscribe_token)
        return mailto

    @property
    def return_path(self) -> str | None:
        """The message's VERP envelope sender (``topslot.links.verp``), or None without ``bounces.domain``."""
        links = self._links
        if links.verp_local is None:
            return None
        return return_path(links.signer, self.delivery_id, links.verp_local, links.mail_domain)

    @property
    def _unsubscribe_token(self) -> str:
        token = self._token
        if token is None:
            token = self._token = self._links.signer.sign("unsubscribe", self.delivery_id)
        return token


PLACEHOLDER_TOKEN_CHARS = 43  # a click token for a delivery id below 2**28 signed by a 5-character key id


def placeholder_track(base: TrackingBase | str, channel: str, marker: str = "preview") -> Callable[[str], str]:
    """A ``track`` whose links are as long as real ones on ``channel`` (a short link, or a click token
    of ``PLACEHOLDER_TOKEN_CHARS``): for estimates. Never valid, nothing recorded."""
    if spec_of(channel).short_links:
        return placeholder_short_track(base, marker)
    prefix = base.url if isinstance(base, TrackingBase) else base.rstrip("/")
    url = f"{prefix}/{ROUTES['click']}/{(marker + '0' * PLACEHOLDER_TOKEN_CHARS)[:PLACEHOLDER_TOKEN_CHARS]}"

    def track(link: str) -> str:
        normalise_url(link)
        return url

    return track


def placeholder_short_track(base: TrackingBase | str, marker: str = "preview") -> Callable[[str], str]:
    """A ``track`` for previews, validation and estimates on a short-link channel: every link becomes
    ``{base}/s/{marker}000...``, exactly as long as a real short link (so segment counts are
    exact), never valid, nothing recorded. ``InvalidLink`` for what ``track`` refuses too."""
    prefix = base.url if isinstance(base, TrackingBase) else base.rstrip("/")
    url = f"{prefix}/{SHORT_ROUTE}/{placeholder_code(marker)}"

    def track(link: str) -> str:
        normalise_url(link)
        return url

    return track
