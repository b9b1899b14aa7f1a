"""The channels topslot sends on, each defined once (pure).

Everything that differs per channel is a field of its ``ChannelSpec``: where a contact's address
is kept, how an address is written for the suppression list, whether the message is MIME (email)
or text (SMS, IM), whether opens can be tracked, whether it is billed per segment and gets short
links, which template files a campaign names for it.
The dispatcher, the segment SQL, the tracking events, the planner's window sizing, the link
factory and ``topslot preview`` read these fields; none of them branches on a channel's name.

Addresses:

- email: ``contacts.email``; compared and suppressed lower-cased;
- sms: ``contacts.phone`` (E.164, normalised at import);
- im: one entry of ``contacts.im_ids`` (a JSON object ``{provider: id}``), chosen by the campaign's
  ``content.im.provider`` (or the first the contact has); written ``provider:id``, which is also
  its suppression address, so a block on one IM network never silences another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Channel = Literal["email", "sms", "im"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)

OUTBOX_PROVIDER = "outbox"
"""The provider name of the file outboxes: what they took was written for people, not sent or paid."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: Channel
    label: str  # for people: "email", "SMS", "IM"
    plural: str  # "emails", "SMS", "IM messages"
    contact_field: Literal["email", "phone", "im_ids"]  # the contacts column that holds the address
    keyed: bool  # the address is one key of a JSON object (IM: im_ids[provider])
    lower_case: bool  # addresses compare lower-cased (email)
    mime: bool  # a MIME message (subject, HTML and text parts) rather than one text body
    segmented: bool  # billed per segment of the text (SMS: GSM-7 160/153, UCS-2 70/67 characters)
    tracks_opens: bool  # an open pixel is possible
    short_links: bool  # track() gives 26-character /s/ short links (every character is billed), not /c/ tokens
    opt_out_line: bool  # bodies end with the country's opt-out line (compliance.sms_opt_out)
    cards: bool  # messages carry a card (title, link button, coupon) and may be provider templates (IM)
    templates: tuple[str, ...]  # keys of content.<channel> that name template files
    opt_out_templates: tuple[str, ...]  # of those, the ones that must show ``unsubscribe_url``
    phone_keys: tuple[str, ...] = ()  # keys whose id is a phone number: the contact's phone stands in for it
    quiet_hours: str | None = None  # default local quiet hours "HH:MM-HH:MM" (settings quiet_hours may change it)

    def address(self, contact: Any, key: str | None = None) -> str | None:
        """The contact's address on this channel (``contact`` has the contacts columns as attributes
        or keys); for a keyed channel, under ``key`` or else the first one the contact has."""
        value = self._field(contact)
        if not self.keyed:
            return value if isinstance(value, str) and value.strip() else None
        ids: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
        usable = sorted(k for k, v in ids.items() if isinstance(v, str) and v.strip())
        chosen = key if key else next(iter(usable), None)
        if chosen in usable:
            return f"{chosen}:{ids[chosen]}"
        phone = self._phone(contact) if chosen in self.phone_keys else None
        return f"{chosen}:{phone}" if phone else None

    def all_addresses(self, contact: Any) -> list[str]:
        """Every address the contact has on this channel (IM: one per network), as suppressed."""
        if not self.keyed:
            found = self.address(contact)
            return [self.suppression_address(found)] if found else []
        ids = self._field(contact)
        return [
            self.suppression_address(f"{key}:{found}")
            for key, found in sorted(ids.items() if isinstance(ids, Mapping) else ())
            if isinstance(found, str) and found.strip()
        ]

    def _field(self, contact: Any) -> Any:
        return contact.get(self.contact_field) if isinstance(contact, Mapping) else getattr(contact, self.contact_field)

    @staticmethod
    def _phone(contact: Any) -> str | None:
        phone = contact.get("phone") if isinstance(contact, Mapping) else getattr(contact, "phone", None)
        return phone if isinstance(phone, str) and phone.strip() else None

    def suppression_address(self, address: str) -> str:
        """The one spelling the suppression list stores and compares."""
        address = address.strip()
        return address.lower() if self.lower_case else address

    def count(self, n: int) -> str:
        """``1 email``, ``2 emails``, ``3 SMS``."""
        return f"{n:,} {self.label if n == 1 else self.plural}"


SPECS: Mapping[Channel, ChannelSpec] = {
    "email": ChannelSpec(
        name="email",
        label="email",
        plural="emails",
        contact_field="email",
        keyed=False,
        lower_case=True,
        mime=True,
        segmented=False,
        tracks_opens=True,
        short_links=False,
        opt_out_line=False,
        cards=False,
        templates=("html", "text"),
        opt_out_templates=("html", "text"),
    ),
    "sms": ChannelSpec(
        name="sms",
        label="SMS",
        plural="SMS",
        contact_field="phone",
        keyed=False,
        lower_case=False,
        mime=False,
        segmented=True,
        tracks_opens=False,
        short_links=True,
        opt_out_line=True,
        cards=False,
        templates=("body",),
        opt_out_templates=(),
        quiet_hours="21:00-08:00",  # US TCPA: no marketing texts before 08:00 or after 21:00 local
    ),
    "im": ChannelSpec(
        name="im",
        label="IM message",
        plural="IM messages",
        contact_field="im_ids",
        keyed=True,
        lower_case=False,
        mime=False,
        segmented=False,
        tracks_opens=False,
        short_links=True,  # links shown in chats: short like SMS links
        opt_out_line=False,
        cards=True,
        templates=("body",),
        opt_out_templates=(),
        phone_keys=("whatsapp",),  # a WhatsApp id is a phone number: im_whatsapp, else the phone
        quiet_hours="21:00-08:00",  # as SMS: a push to a phone
    ),
}
assert tuple(SPECS) == CHANNELS


def spec_of(channel: str) -> ChannelSpec:
    """The spec of a channel name; ``KeyError`` naming the known ones for anything else."""
    try:
        return SPECS[channel]  # type: ignore[index]
    except KeyError:
        raise KeyError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}") from None
