"""The bounce corpus (``tests/bounces/corpus/*.eml``): messages shaped like those real relays and
providers send (Postfix, Exim, Exchange/Outlook, Gmail, QQ through Postfix, 163.com, the Yahoo and
Microsoft feedback loops, an out-of-office reply, a forgery), with placeholders filled in for one
delivery: ``$verp`` (its return path), ``$rcpt`` (its recipient), ``$msgid`` (its Message-ID),
``$unsub`` (its unsubscribe token), ``$forged`` (a VERP address with a broken signature)."""

from __future__ import annotations

from pathlib import Path
from string import Template

from topslot.links.keys import Keyring
from topslot.links.tokens import Signer, sign
from topslot.links.verp import return_path

CORPUS = Path(__file__).parent / "corpus"
KEYRING = Keyring({"k1": b"bounce-test-key-0123456789abcdef"})
DOMAIN = "bounces.shop.example"
RCPT = "mei.lin@example.net"


def values(delivery_id: int, rcpt: str = RCPT, keyring: Keyring = KEYRING) -> dict[str, str]:
    verp = return_path(Signer(keyring), delivery_id, "bounce", DOMAIN)
    local, _, domain = verp.partition("@")
    forged = local[:-3] + ("AAA" if local[-3:] != "AAA" else "BBB") + "@" + domain
    return {
        "verp": verp,
        "rcpt": rcpt,
        "msgid": f"<d{delivery_id}.mothers-day-2027@shop.example>",
        "unsub": sign(keyring, "unsubscribe", delivery_id),
        "forged": forged,
    }


def message(name: str, delivery_id: int, rcpt: str = RCPT, keyring: Keyring = KEYRING) -> bytes:
    """The corpus message ``name`` (without .eml) about ``delivery_id``, CRLF line ends."""
    text = (CORPUS / f"{name}.eml").read_text(encoding="utf-8")
    filled = Template(text).safe_substitute(values(delivery_id, rcpt, keyring))
    return filled.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
