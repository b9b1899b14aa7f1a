"""Links for one message: what the renderer puts in ``track``, ``landing_url``, ``unsubscribe_url``,
the open pixel and the ``List-Unsubscribe`` header (pure).

Build one ``CampaignLinks`` per campaign (per dispatch batch, or longer: its ``LinkBook`` bounds its
own memory), then one ``DeliveryLinks`` per message::

    links = CampaignLinks(campaign, keyring, TrackingBase.parse(settings.tracking_base_url))
    msg = links.for_delivery(delivery_id, "email", tracking_allowed=contact_allows_tracking)
    html = template.render(track=msg.track, landing_url=msg.landing_url, unsubscribe_url=msg.unsubscribe_url, ...)
    pairs = links.book.pending()  # save before sending: daemon.store.links.save_links

Tracking off (the campaign's ``tracking.clicks`` / ``tracking.opens`` false, or
``tracking_allowed=False`` for a contact without tracking consent, which turns off both):
``track(url)`` returns the normalised URL itself and ``open_pixel_url`` is None. The unsubscribe
links are always signed tokens: they are how the recipient leaves, not tracking.
"""

from __future__ import annotations

from functools import cached_property

from daemon.campaign import Campaign
from daemon.links.book import LinkBook
from daemon.links.keys import Keyring
from daemon.links.tokens import sign
from daemon.links.tracking import (
    TrackingBase,
    mailto_domain,
    open_pixel_url,
    tracked_url,
    unsubscribe_mailto,
    unsubscribe_url,
)
from daemon.links.urls import normalise_url


class CampaignLinks:
    """Per-campaign link state: keyring, tracking base, the campaign's flags, landing URLs and book."""

    def __init__(
        self,
        campaign: Campaign,
        keyring: Keyring,
        base: TrackingBase | str,
        *,
        book: LinkBook | None = None,
        mail_domain: str | None = None,
    ):
        self.campaign = campaign
        self.keyring = keyring
        self.base = base if isinstance(base, TrackingBase) else TrackingBase.parse(base)
        self.book = book if book is not None else LinkBook(campaign.id)
        self.mail_domain = mailto_domain(self.base, mail_domain)
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


class DeliveryLinks:
    """Links for one delivery. Tokens are signed on first use only (an SMS never signs a pixel)."""

    def __init__(self, links: CampaignLinks, delivery_id: int, channel: str, tracking_allowed: bool):
        self._links = links
        self.delivery_id = delivery_id
        self.channel = channel
        tracking = links.campaign.tracking
        self.clicks_tracked = tracking_allowed and tracking.clicks
        self.opens_tracked = tracking_allowed and tracking.opens and channel == "email"

    @property
    def landing_url(self) -> str:
        """The landing page with UTM parameters, untracked (templates write ``track(landing_url)``)."""
        return self._links.landing_url(self.channel)

    def track(self, url: str) -> str:
        """``url`` as a signed tracked link (recorded in the campaign's ``LinkBook``); the URL itself
        when clicks are not tracked; unchanged when it already is a tracking URL. ``InvalidLink``
        (a ValueError) for anything but an absolute http(s) URL."""
        links = self._links
        if isinstance(url, str) and links.is_tracking_url(url):
            return url
        if not self.clicks_tracked:
            return normalise_url(url)
        key, _ = links.book.add(url)
        return tracked_url(links.base, sign(links.keyring, "click", self.delivery_id, key))

    @cached_property
    def open_pixel_url(self) -> str | None:
        """``{base}/o/{token}.gif`` for email with opens tracked, else None."""
        if not self.opens_tracked:
            return None
        return open_pixel_url(self._links.base, sign(self._links.keyring, "open", self.delivery_id))

    @cached_property
    def unsubscribe_url(self) -> str:
        """The one-click unsubscribe page (GET shows it, POST unsubscribes: RFC 8058)."""
        return unsubscribe_url(self._links.base, self._unsubscribe_token)

    @cached_property
    def unsubscribe_mailto(self) -> str:
        """``mailto:unsubscribe+{token}@{domain}`` for the ``List-Unsubscribe`` header."""
        return unsubscribe_mailto(self._links.mail_domain, self._unsubscribe_token)

    @property
    def list_unsubscribe(self) -> str:
        """The ``List-Unsubscribe`` header value: ``<https://...>, <mailto:...>`` (https first)."""
        return f"<{self.unsubscribe_url}>, <{self.unsubscribe_mailto}>"

    @cached_property
    def _unsubscribe_token(self) -> str:
        return sign(self._links.keyring, "unsubscribe", self.delivery_id)
