"""The shapes of the identifiers both ``topslot.yaml`` (``topslot.settings``) and campaign files
(``topslot.campaign``) hold, as pydantic types: one definition each, the same check and the same
JSON Schema pattern wherever they are written."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, WithJsonSchema

E164 = r"^\+[1-9][0-9]{6,14}$"
"""A phone number in E.164 form: ``+`` and up to 15 digits, the country code first."""
PhoneNumber = Annotated[str, Field(pattern=E164)]

MessagingServiceSid = Annotated[str, Field(pattern=r"^MG[0-9a-fA-F]{32}$")]
"""A Twilio Messaging Service (``MG`` and 32 hex digits)."""

ContentSid = Annotated[str, Field(pattern=r"^HX[0-9a-fA-F]{32}$")]
"""An approved WhatsApp template of Twilio's Content API (``HX`` and 32 hex digits)."""

PROVIDER_NAME = r"^[a-z][a-z0-9_]{0,19}$"
_PROVIDER_NAME = re.compile(PROVIDER_NAME)


def _provider_name(value: str) -> str:
    if not _PROVIDER_NAME.match(value):
        raise ValueError(
            f"'{value}' is not an IM provider name: use 1-20 of a-z, 0-9 and _, starting with a letter "
            "(it is also the contacts' im_<name> column)"
        )
    return value


ProviderName = Annotated[
    str, AfterValidator(_provider_name), WithJsonSchema({"type": "string", "pattern": PROVIDER_NAME})
]
"""The name of an IM provider: its key under ``im:`` in topslot.yaml, ``content.im.provider`` in a
campaign, and the ``im_<name>`` import column holding each contact's id on it."""
