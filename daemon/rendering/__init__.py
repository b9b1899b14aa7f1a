"""Rendering: campaign templates compiled once per load, rendered per recipient, assembled into MIME.

- ``compile_campaign(campaign, templates_dir, settings.compliance)`` → ``CompiledCampaign``
- ``CompiledCampaign.render_email(contact, coupon, links, slot)`` → ``RenderedEmail``
- ``CompiledCampaign.assembler.assemble(rendered, to=..., delivery_id=..., date=...)`` → bytes
- ``CompiledCampaign.render_text("sms" | "im", ...)`` → str (an SMS ends with the opt-out line of
  the recipient's country, ``compliance.sms_opt_out``); ``sms_segments(text)``
"""

from topslot.rendering.bounds import RenderLimits, render_bounded, render_checked
from topslot.rendering.campaign_renderer import (
    CompiledCampaign,
    CompiledEmail,
    CompiledText,
    MessageLinks,
    RenderedEmail,
    compile_campaign,
)
from topslot.rendering.mime import HeaderValueError, MimeAssembler
from topslot.rendering.sms_segments import SmsSegments, sms_segments

__all__ = [
    "CompiledCampaign",
    "CompiledEmail",
    "CompiledText",
    "HeaderValueError",
    "MessageLinks",
    "MimeAssembler",
    "RenderLimits",
    "RenderedEmail",
    "SmsSegments",
    "compile_campaign",
    "render_bounded",
    "render_checked",
    "sms_segments",
]
