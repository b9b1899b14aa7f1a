"""The channel registry: which messenger sends what, at which rate, with which share."""

from __future__ import annotations

from pathlib import Path

import pytest
from dispatch.fixtures import campaign
from dispatch.fixtures import settings as smtp_settings

from topslot.channels.outbox import JsonlTextOutbox, MaildirOutbox
from topslot.channels.ratelimit import KeyedLimiter, TokenBucket
from topslot.channels.registry import OUTBOX_RATE_PER_S, Registry, provider_problems
from topslot.channels.smtp import SmtpPool
from topslot.settings import Settings, SmtpServer


def demo_settings(tmp_path: Path) -> Settings:
    return Settings(config_dir=tmp_path, var_dir=tmp_path / "var", outbox_dir=None)


async def test_without_providers_every_channel_goes_to_its_outbox(tmp_path: Path) -> None:
    registry = Registry(demo_settings(tmp_path))
    email, sms, im = (registry.messenger(c) for c in ("email", "sms", "im"))

    assert isinstance(email, MaildirOutbox) and email.directory == tmp_path / "var" / "outbox"
    assert isinstance(sms, JsonlTextOutbox) and sms.path == tmp_path / "var" / "outbox" / "sms.jsonl"
    assert isinstance(im, JsonlTextOutbox) and im.path == tmp_path / "var" / "outbox" / "im.jsonl"
    assert all(m.provider == "outbox" for m in (email, sms, im))
    assert [m.channel for m in (email, sms, im)] == ["email", "sms", "im"]
    assert registry.rate("sms") == OUTBOX_RATE_PER_S
    assert registry.messenger("email") is email  # built once
    await registry.close()
    assert email._closed and sms._closed


async def test_configured_smtp_wins_over_the_outbox_and_sizes_windows(tmp_path: Path) -> None:
    servers = {"main": SmtpServer(port=2525, rate_per_second=40), "backup": SmtpServer(port=2526, rate_per_second=90)}
    registry = Registry(Settings(config_dir=tmp_path, var_dir=tmp_path, smtp=servers))

    email = registry.messenger("email")
    assert isinstance(email, SmtpPool) and email.provider == "smtp"
    assert registry.rate("email") == 40  # the primary server's: failovers are not extra capacity
    assert registry.provider("email", wanted="outbox").name == "outbox"  # asked for by name
    assert registry.provider("email", wanted="nonesuch").name == "smtp"  # unknown name: the default
    await registry.close()


def test_each_of_n_processes_gets_its_share_of_every_smtp_server(tmp_path: Path) -> None:
    s = smtp_settings(tmp_path, 2525, dispatch_processes=3)
    registry = Registry(s, share=1 / 3)
    pool = registry.messenger("email")

    assert isinstance(pool, SmtpPool)
    (server,) = pool._servers
    local = s.smtp["local"]
    assert server.config.pool_size == max(1, local.pool_size // 3)
    assert isinstance(server.domains, KeyedLimiter) and server.domains.limit == local.max_per_domain // 3
    assert isinstance(server.bucket, TokenBucket) and server.bucket.rate == pytest.approx(local.rate_per_second / 3)
    assert registry.rate("email") == local.rate_per_second  # windows are sized by the whole node's rate


def test_unknown_channel_and_bad_share_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Registry(demo_settings(tmp_path), share=0)
    with pytest.raises(KeyError, match="unknown channel 'fax'"):
        Registry(demo_settings(tmp_path)).provider("fax")  # type: ignore[arg-type]


IM_SETTINGS = {
    "wa": {"kind": "whatsapp", "from_number": "+14155238886"},
    "gw": {"kind": "webhook", "url": "https://gw.shop.example/topslot", "secret": "s" * 32},
}
TEMPLATE = {"content_sid": "HX" + "a" * 32, "variables": {"1": "{{ contact.first_name }}"}}


@pytest.mark.parametrize(
    ("im", "expected"),
    [
        ({"provider": "wa", **TEMPLATE}, []),
        ({"provider": "gw", "title": "Gift", "button": "Open"}, []),
        ({"provider": "wa"}, [(("content", "im"), "marketing messages must be approved templates")]),
        (
            {"provider": "wa", "title": "Gift", "button": "Open", **TEMPLATE},
            [(("content", "im", "title"), "title changes nothing"), (("content", "im", "button"), "button changes")],
        ),
        (
            {"provider": "gw", **TEMPLATE},
            [
                (("content", "im", "content_sid"), "content_sid is for WhatsApp templates; 'gw' is a webhook"),
                (("content", "im", "variables"), "variables is for WhatsApp templates"),
            ],
        ),
        ({"provider": "dingtalk"}, [(("content", "im", "provider"), "'dingtalk' is not in the settings (im: gw, wa)")]),
        ({}, [(("content", "im"), "name the IM provider it sends through (content.im.provider): gw, wa")]),
    ],
)
def test_a_campaign_is_refused_for_im_keys_its_provider_cannot_use(
    tmp_path: Path, im: dict[str, object], expected: list[tuple[tuple[str, ...], str]]
) -> None:
    twilio = {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32, "from_number": "+15005550006"}
    settings = Settings(
        config_dir=tmp_path,
        var_dir=tmp_path / "var",
        twilio=twilio,
        im=IM_SETTINGS,
        compliance={"sender_identity": "Example Shop"},
    )
    c = campaign(channels=["im"], audience={"all": [{"consent": "im"}]}, content={"im": {"body": "t.j2", **im}})

    found = provider_problems(c, settings)

    assert [path for path, _ in found] == [path for path, _ in expected]
    assert all(part in message for (_, message), (_, part) in zip(found, expected, strict=True)), found
