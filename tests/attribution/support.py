"""A campaign for attribution tests."""

from __future__ import annotations

from typing import Any

from topslot.campaign import Campaign


def make_campaign(campaign_id: str = "mothers-day-2027", **extra: Any) -> Campaign:
    data: dict[str, Any] = {
        "id": campaign_id,
        "name": "Mother's Day",
        "channels": ["email", "sms"],
        "audience": {"all": [{"attribute": "gender", "equals": "female"}]},
        "schedule": {"start": "2027-05-06", "end": "2027-05-09"},
        "coupon": {"generate": {"prefix": "MOM", "length": 10}},
        "landing_page": {"url": "https://shop.example.com/mothers-day"},
        "content": {
            "email": {"from": "Shop <news@shop.example.com>", "subject": "Hi", "html": "m/email.html.j2"},
            "sms": {"body": "m/sms.txt.j2"},
        },
        "costs": {"email": "0.002", "sms": "0.05", "currency": "USD", "margin": "0.4"},
    }
    data.update(extra)
    return Campaign.model_validate(data)
