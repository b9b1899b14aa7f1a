"""Reading one returned message (pure): a bounce, a complaint, an auto-reply, or nothing known.

In order:

1. **ARF** (RFC 5965: ``multipart/report; report-type=feedback-report``, the feedback loops of Yahoo,
   Microsoft, AOL, Mail.ru...): a spam complaint (``COMPLAINT``), whatever its ``Feedback-Type``
   (``abuse``, ``fraud``...) says beside.
2. **DSN** (RFC 3464: ``multipart/report; report-type=delivery-status``): the first recipient block
   with ``Action: failed`` (or, failing that, ``delayed``: ``DELAYED``, a warning, not a bounce); its
   ``Status`` decides (below), ``Diagnostic-Code`` is kept as the reason.
3. **Non-standard bounces** (Exchange's and qmail's plain-text ones, Gmail's "Delivery Status
   Notification", the Chinese providers' 系统退信 / 退信): a message from ``MAILER-DAEMON`` or
   ``postmaster``, or with a bounce-like subject, whose text carries an enhanced status code
   (``5.1.1``), an SMTP reply code, or the usual words ("user unknown", "mailbox full", 用户不存在...).
4. **Auto-replies** (RFC 3834 ``Auto-Submitted`` other than ``no``, ``X-Autoreply``,
   ``Precedence: auto_reply``, "Out of Office" / "Automatic reply" / 自动回复 subjects):
   ``AUTO_REPLY``, ignored. (DSNs carry ``Auto-Submitted`` too: they are recognised first.)

The status (RFC 3463) decides a bounce's kind:

- ``HARD_BOUNCE``: the address is dead, whatever is sent to it: 5.1.0-5.1.3, 5.1.6, 5.1.10 (no
  such user, bad mailbox or domain, moved), 5.2.1 (disabled), 5.4.4 (domain cannot be routed: no
  such domain); a generic 5.x.x (or a bare 550/551/553) whose text says the user is unknown;
- ``BLOCKED``: refused for the message or the sender, not the address: 5.7.x (spam, policy,
  authentication), 5.3.4 and 5.2.3 (too big): the ledger says bounced, the address stays;
- ``SOFT_BOUNCE``: everything else: 4.x.x, 5.2.2 (mailbox full), other 5.x.x. It suppresses the
  address only once it repeats (``bounces.soft_limit``, ``topslot.bounces.record``).

Which delivery it is about is read from the message but decided in ``topslot.bounces.record``:
the addresses a bounce was sent to (VERP), the returned original's signed unsubscribe token, and
its ``Message-ID``. Everything is bounded: at most ``MAX_MESSAGE_BYTES`` are parsed, at most
``MAX_TEXT_CHARS`` of text are searched, reasons are cut to ``MAX_REASON``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr
from enum import StrEnum

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_TEXT_CHARS = 64 * 1024
MAX_PARTS = 64
MAX_REASON = 200


class Kind(StrEnum):
    HARD_BOUNCE = "hard_bounce"  # the address is dead: bounced, suppressed
    SOFT_BOUNCE = "soft_bounce"  # not delivered this time: bounced; suppressed after bounces.soft_limit
    BLOCKED = "blocked"  # refused for the message or the sender (5.7.x): bounced, the address stays
    COMPLAINT = "complaint"  # the recipient reported the message as spam (ARF): suppressed
    DELAYED = "delayed"  # a DSN that only warns (Action: delayed): nothing changes
    DELIVERED = "delivered"  # an ESP's delivery event (POST /feedback): sent → delivered
    AUTO_REPLY = "auto_reply"  # out of office and the like: nothing changes
    UNKNOWN = "unknown"  # nothing topslot recognises: nothing changes


RETURNED_KINDS = (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE, Kind.BLOCKED)  # in this order in reports
BOUNCES = frozenset(RETURNED_KINDS)


@dataclass(frozen=True, slots=True)
class Feedback:
    """What one returned message says, and the clues to the delivery it is about."""

    kind: Kind
    format: str  # arf | dsn | text | auto_reply | none: how it was read
    status: str | None = None  # "5.1.1"
    reason: str | None = None  # the diagnostic or the matching line, at most MAX_REASON characters
    recipient: str | None = None  # the address that bounced or complained, lower-cased
    addressed_to: tuple[str, ...] = ()  # where the message was sent (To, Delivered-To...): a VERP address
    original_senders: tuple[str, ...] = ()  # the returned original's envelope sender(s): a VERP address
    unsubscribe_tokens: tuple[str, ...] = ()  # from the returned original's List-Unsubscribe (signed)
    message_ids: tuple[str, ...] = ()  # the returned original's Message-ID


_HARD_STATUSES = frozenset({"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1", "5.4.4"})
_BLOCKED_STATUS = re.compile(r"^5\.(7\.\d+|3\.4|2\.3)$")
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_CODE = re.compile(r"(?<!\d)([45][0-5]\d)(?:[ -]|$)", re.MULTILINE)
_DEAD = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient|address)|unknown (recipient|mailbox)"
    r"|recipient unknown|mailbox (not found|unknown|disabled|is disabled|unavailable)|account (is |has been )?disabled"
    r"|does ?n[o']t exist|invalid (recipient|mailbox)|not a valid (recipient|mailbox)|recipient address rejected"
    r"|user not found|address not found|host or domain name not found|domain not found|no mx record"
    r"|用户不存在|收件人不存在|地址不存在|收件人地址不存在|账户不存在|帐户不存在|邮箱不存在|用户名不存在",
    re.IGNORECASE,
)
_FULL = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|insufficient (system )?storage|mailbox size limit"
    r"|邮箱已满|容量已满|空间不足|超出.{0,4}容量",
    re.IGNORECASE,
)
_BLOCK_WORDS = re.compile(r"\bspam\b|blocked|blacklist|block ?list|policy|垃圾邮件|拒绝", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|has failed|failed)|returned mail|mail delivery"
    r"|failure notice|delivery notification|non[- ]?delivery|could not be delivered|系统退信|退信|投递失败|无法投递",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto response|on vacation|away from"
    r"|自动回复|自動回覆|休假",
    re.IGNORECASE,
)
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon")
_UNSUBSCRIBE_TOKEN = re.compile(r"/u/([A-Za-z0-9_-]{8,80})(?![A-Za-z0-9_-])|unsubscribe\+([A-Za-z0-9_-]{8,80})@")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_ADDRESSED = ("to", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "x-rcpt-to")


def classify(raw: bytes, envelope_to: tuple[str, ...] = ()) -> Feedback:
    """Read ``raw`` (one message, RFC 5322 bytes); ``envelope_to``: the addresses the receiver took it
    for (RCPT TO), the surest sign of which VERP address it answers."""
    message = message_from_bytes(raw[:MAX_MESSAGE_BYTES], policy=policy.compat32)
    addressed = tuple(dict.fromkeys([*envelope_to, *_addresses(message, _ADDRESSED)]))
    parts = _parts(message)
    report_type = str(message.get_param("report-type", "", header="content-type")).lower()
    arf = message.get_content_type() == "multipart/report" and report_type == "feedback-report"
    if arf or _part(parts, "message/feedback-report") is not None:
        return _arf(parts, addressed)
    status_part = _part(parts, "message/delivery-status")
    if status_part is not None:
        dsn = _dsn(status_part, parts, addressed)
        if dsn is not None:
            return dsn
    if _looks_like_bounce(message):
        return _text_bounce(message, parts, addressed)
    if _auto_reply(message):
        return Feedback(Kind.AUTO_REPLY, "auto_reply", addressed_to=addressed)
    return Feedback(Kind.UNKNOWN, "none", addressed_to=addressed)


def kind_of(status: str | None, text: str) -> Kind:
    """A bounce's kind from its enhanced status (``5.1.1``) and its text (see the module docstring)."""
    if status is not None:
        if status in _HARD_STATUSES:
            return Kind.HARD_BOUNCE
        if _BLOCKED_STATUS.match(status):
            return Kind.BLOCKED
        if status.startswith("4."):
            return Kind.SOFT_BOUNCE
        if status == "5.2.2" or _FULL.search(text):
            return Kind.SOFT_BOUNCE
        generic = status.split(".")[1] == "0"
        if generic and _DEAD.search(text):
            return Kind.HARD_BOUNCE
        if generic and _BLOCK_WORDS.search(text):
            return Kind.BLOCKED
        return Kind.SOFT_BOUNCE
    reply = _REPLY_CODE.search(text)
    code = reply[1] if reply else None
    if _FULL.search(text):
        return Kind.SOFT_BOUNCE
    if _DEAD.search(text) and (code is None or code.startswith("5")):
        return Kind.HARD_BOUNCE
    if code is not None and code.startswith("4"):
        return Kind.SOFT_BOUNCE
    if _BLOCK_WORDS.search(text):
        return Kind.BLOCKED
    return Kind.SOFT_BOUNCE


# ---------------------------------------------------------------- the formats


def _arf(parts: list[Message], addressed: tuple[str, ...]) -> Feedback:
    report = _part(parts, "message/feedback-report")
    fields = _fields(report) if report is not None else Message()
    original = _original(parts)
    senders = _addresses(fields, ("original-mail-from",)) + _original_senders(original)
    recipient = _first_address(fields, ("original-rcpt-to", "removal-recipient"))
    if recipient is None and original is not None:
        recipient = _first_address(original, ("to",))
    return Feedback(
        Kind.COMPLAINT,
        "arf",
        recipient=recipient,
        addressed_to=addressed,
        original_senders=tuple(dict.fromkeys(senders)),
        unsubscribe_tokens=_unsubscribe_tokens(original),
        message_ids=_message_ids(original),
        reason=_clip(_text(fields.get("feedback-type"))),  # ARF Feedback-Type: abuse, fraud, ...
    )


def _dsn(status_part: Message, parts: list[Message], addressed: tuple[str, ...]) -> Feedback | None:
    blocks = _blocks(status_part)
    recipients = blocks[1:] if len(blocks) > 1 else blocks
    chosen = next((b for b in recipients if _text(b.get("action")).lower() == "failed"), None)
    delayed = chosen is None
    if chosen is None:
        chosen = next((b for b in recipients if _text(b.get("action")).lower() == "delayed"), None)
    if chosen is None:
        return None  # delivered, relayed, expanded: nothing went wrong
    status_match = _STATUS.search(_text(chosen.get("status")))
    status = ".".join(status_match.groups()) if status_match else None
    diagnostic = _text(chosen.get("diagnostic-code"))
    recipient = _address_field(chosen.get("final-recipient")) or _address_field(chosen.get("original-recipient"))
    original = _original(parts)
    per_message = blocks[0] if len(blocks) > 1 else Message()
    senders = _original_senders(original) + tuple(
        a
        for a in (_address_field(per_message.get(n), lower=False) for n in ("x-postfix-sender", "x-original-mail-from"))
        if a
    )
    kind = Kind.DELAYED if delayed else kind_of(status, diagnostic)
    return Feedback(
        kind,
        "dsn",
        status=status,
        reason=_clip(diagnostic or None),
        recipient=recipient,
        addressed_to=addressed,
        original_senders=tuple(dict.fromkeys(senders)),
        unsubscribe_tokens=_unsubscribe_tokens(original),
        message_ids=_message_ids(original),
    )


def _text_bounce(message: Message, parts: list[Message], addressed: tuple[str, ...]) -> Feedback:
    text = _body_text(parts)
    status_match = _STATUS.search(text)
    status = ".".join(status_match.groups()) if status_match else None
    line = _reason_line(text)
    original = _original(parts)  # else the original's headers may be pasted into the text (qmail, 163.com)
    pasted_senders = tuple(re.findall(r"(?im)^return-path:\s*<([^>\s]{3,320})>", text))
    return Feedback(
        kind_of(status, text),
        "text",
        status=status,
        reason=_clip(line),
        recipient=_first_address(message, ("x-failed-recipients",)) or _bounced_address(text, addressed),
        addressed_to=addressed,
        original_senders=_original_senders(original) or pasted_senders,
        unsubscribe_tokens=_unsubscribe_tokens(original) or tokens_in(text),
        message_ids=_message_ids(original) or _ids_in(text),
    )


def _looks_like_bounce(message: Message) -> bool:
    sender = parseaddr(_text(message.get("from")))[1].lower()
    if sender.partition("@")[0] in _DAEMONS:
        return True
    return bool(_BOUNCE_SUBJECT.search(_text(message.get("subject"))))


def _auto_reply(message: Message) -> bool:
    auto = _text(message.get("auto-submitted")).lower()
    if auto and not auto.startswith("no"):
        return True
    if message.get("x-autoreply") or message.get("x-autorespond") or message.get("x-auto-response-suppress"):
        return True
    if _text(message.get("precedence")).lower() in ("auto_reply", "auto-reply"):
        return True
    return bool(_AUTO_SUBJECT.search(_text(message.get("subject"))))


# ---------------------------------------------------------------- reading parts


def _parts(message: Message) -> list[Message]:
    """The message's parts, depth first, at most ``MAX_PARTS`` (a returned message/rfc822 counts as
    one part: its own parts are not searched, its headers are read by ``_original``)."""
    found: list[Message] = []
    stack = [message]
    while stack and len(found) < MAX_PARTS:
        part = stack.pop(0)
        found.append(part)
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack[:0] = [p for p in payload if isinstance(p, Message)]
    return found


def _part(parts: list[Message], content_type: str) -> Message | None:
    return next((p for p in parts if p.get_content_type() == content_type), None)


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status part (the per-message one, then per recipient)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = _decoded(part)
    return [message_from_string(block.strip() + "\n") for block in re.split(r"\r?\n\s*\r?\n", text) if block.strip()]


def _fields(part: Message) -> Message:
    """A message/feedback-report part's fields as headers."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return message_from_string(_decoded(part))


def _original(parts: list[Message]) -> Message | None:
    """The returned original (message/rfc822, or text/rfc822-headers), headers at least."""
    for part in parts[1:]:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            return message_from_string(_decoded(part))
        if content_type in ("text/rfc822-headers", "text/global-headers"):
            return message_from_string(_decoded(part))
    return None


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload[:MAX_TEXT_CHARS].decode(charset, "replace")
        except LookupError:
            return payload[:MAX_TEXT_CHARS].decode("utf-8", "replace")
    raw = part.get_payload()
    return raw[:MAX_TEXT_CHARS] if isinstance(raw, str) else ""


def _body_text(parts: list[Message]) -> str:
    texts: list[str] = []
    size = 0
    for part in parts:
        if part.get_content_maintype() == "text" and part.get_content_type() != "text/rfc822-headers":
            text = _decoded(part)
            if part.get_content_subtype() == "html":
                text = re.sub(r"<[^>]{0,2000}>", " ", text)
            texts.append(text)
            size += len(text)
            if size >= MAX_TEXT_CHARS:
                break
    return "\n".join(texts)[:MAX_TEXT_CHARS]


def _text(value: object) -> str:
    """A header value as text (encoded words decoded; anything odd becomes text, never raises)."""
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value)))).strip()
    except Exception:  # a malformed encoded word: keep it as it came
        return str(value).strip()


def _addresses(message: Message | None, names: tuple[str, ...]) -> tuple[str, ...]:
    if message is None:
        return ()
    found: list[str] = []
    for name in names:
        for value in message.get_all(name) or []:
            found += [addr.strip() for _, addr in getaddresses([_text(value)]) if "@" in addr]
    return tuple(found)


def _first_address(message: Message, names: tuple[str, ...]) -> str | None:
    found = _addresses(message, names)
    return found[0].lower() if found else None


def _address_field(value: object, *, lower: bool = True) -> str | None:
    """``rfc822; user@example.com`` (a DSN's Final-Recipient) → ``user@example.com`` (lower-cased
    unless ``lower`` is False: a VERP address keeps its case)."""
    text = _text(value)
    address = text.partition(";")[2].strip() if ";" in text else text
    address = address.strip("<> \t")
    if "@" not in address:
        return None
    return address.lower() if lower else address


def _original_senders(original: Message | None) -> tuple[str, ...]:
    return _addresses(original, ("return-path", "x-original-return-path"))


def _unsubscribe_tokens(original: Message | None) -> tuple[str, ...]:
    if original is None:
        return ()
    return tokens_in(" ".join(_text(v) for v in original.get_all("list-unsubscribe") or []))


def tokens_in(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m[1] or m[2] for m in _UNSUBSCRIBE_TOKEN.finditer(text[:MAX_TEXT_CHARS])))


def _message_ids(original: Message | None) -> tuple[str, ...]:
    if original is None:
        return ()
    return tuple(_text(v) for v in original.get_all("message-id") or [] if _text(v))


def _ids_in(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(re.findall(r"(?im)^message-id:\s*(<[^>\s]{3,250}>)", text)))


def _reason_line(text: str) -> str | None:
    """The line that says why: the first with a status code, a reply code or the known words."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and (_STATUS.search(stripped) or _DEAD.search(stripped) or _FULL.search(stripped)):
            return stripped
    for line in text.splitlines():
        if _REPLY_CODE.search(line.strip()):
            return line.strip()
    return None


def _bounced_address(text: str, addressed: tuple[str, ...]) -> str | None:
    """The first address in the text that is not where the bounce was sent nor a mailer daemon's."""
    ours = {a.lower() for a in addressed}
    for match in _EMAIL.finditer(text):
        address = match[0].lower().rstrip(".")
        if address in ours or address.partition("@")[0] in _DAEMONS:
            continue
        return address
    return None


def _clip(text: str | None) -> str | None:
    if not text:
        return None
    flat = " ".join(text.split())
    return flat[:MAX_REASON]
