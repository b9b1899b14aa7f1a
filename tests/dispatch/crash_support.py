"""Helpers for the SIGKILL tests: a config directory for a campaign of as many contacts as the test
asks for, ``topslot`` as a child process, a SMTP server that reports each message's body as it
starts to arrive, ledger reads;
for SMS, a config directory whose Twilio is the fake Twilio of this process (``write_sms_setup``),
a fake that reports each create request as it arrives (``CrashTwilio``), and ``sms_ledger``.
For IM, the same through the fake company gateway: ``write_im_setup``, ``CrashImGateway``, ``im_ledger``.

One recipient (``big_index``, attribute ``big``) gets a ~7 MB message: more than the loopback
socket buffers hold (~3 MB here with the server's SO_RCVBUF kept small), so a kill while its body
is on the wire really cuts the body short at the server.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from channels.fake_im_gateway import FakeImGateway
from channels.fake_twilio import FakeTwilio
from channels.scripted_smtp import ScriptedSmtpServer

_SCRIPT = Path(sys.executable).parent / "topslot"  # the installed console script, as systemd runs it
TOPSLOT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "topslot"]
# A prefix for ``topslot``: the child gets SIGKILL if this process dies before it stops it (util-linux
# setpriv execs the command, so the pid is the child's); empty where setpriv is missing.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []

CAMPAIGN_ID = "crash-test"
NODE_ID = "crash-node"
NON_TERMINAL = ("planned", "claimed", "sending", "retry_wait")
BIG_CHARS = 900_000  # CJK characters in each part of the big message (3 bytes each, then base64)

_MESSAGE_ID = re.compile(rb"^Message-ID: <d(\d+)\.", re.IGNORECASE | re.MULTILINE)

# one slot (``day`` ``slot``, UTC, 15 minutes' grace), a generated coupon, a landing page: every crash campaign's
SCHEDULE = """\
schedule:
  start: {day}
  end: {day}
  slots: ["{slot}"]
  timezone: UTC
  days: every_day
  arrive_within: 10m
  missed_slot: {{grace: 15m, then: skip}}
coupon: {{generate: {{prefix: TS, length: 10}}}}
landing_page:
  url: https://shop.example.com/landing?x=1
  utm: {{source: topslot}}
content:
"""

CAMPAIGN = """\
id: {campaign_id}
name: Crash test
channels: [email]
audience:
  all:
    - {{consent: email}}
""" + SCHEDULE + """\
  email:
    from: "Example Shop <news@shop.example.com>"
    subject: "An offer for {{{{ contact.first_name }}}}"
    html: crash/mail.html.j2
    text: crash/mail.txt.j2
"""

# the sandbox refuses to build a string of more than 100,000 items at once: repeat a smaller one
PADDING = (
    '{% if contact.attributes.get("big") %}{% for _ in range(' + str(BIG_CHARS // 90_000) + ") %}"
    '{{ "载" * 90000 }}{% endfor %}{% endif %}'
)
HTML = (
    """<html><head><style>p { color: #333; }</style></head><body>
<p>Hello {{ contact.first_name }},</p>
<p>Your code: <b>{{ coupon }}</b></p>
<p><a href="https://shop.example.com/offer">See the offer</a> or <a href="{{ landing_url }}">shop now</a>.</p>
<p>"""
    + PADDING
    + """</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""
)
TEXT = (
    """Hello {{ contact.first_name }},
Your code: {{ coupon }}
Shop now: {{ landing_url }}
"""
    + PADDING
    + """
Unsubscribe: {{ unsubscribe_url }}
"""
)


def email_of(index: int) -> str:
    return f"accept+{index:04d}@example.com"


@dataclass(frozen=True)
class CrashSetup:
    root: Path
    config: Path
    db: Path
    contacts_csv: Path
    due: datetime
    big_email: str


def _write_setup(
    root: Path,
    due: datetime,
    *,
    channel_settings: str,
    campaign_file: str,
    campaign: str,
    templates: dict[str, str],
    header: list[str],
    rows: Iterable[list[str]],
    big_email: str = "",
    **campaign_fields: str,
) -> CrashSetup:
    """config/topslot.yaml (SQLite, UTC, JSON logs, any free tracking port, then ``channel_settings``),
    ``campaign`` (filled with the day and slot of ``due`` and ``campaign_fields``) as
    config/campaigns/``campaign_file``, ``templates`` under templates/crash/, and a contacts CSV."""
    config = root / "config"
    (config / "campaigns").mkdir(parents=True)
    (root / "templates" / "crash").mkdir(parents=True)
    db = root / "var" / "topslot.db"
    (config / "topslot.yaml").write_text(
        f"""\
database_url: sqlite+aiosqlite:///{db}
templates_dir: {root / "templates"}
var_dir: {root / "var"}
default_timezone: UTC
default_country: US
log_format: json
log_level: info
tracking_port: 0  # any free port: never collide with another daemon
compliance:
  postal_address: "Example Shop, 1 Example Road, Springfield"
  sender_identity: "Example Shop"
quiet_hours: {{sms: none, im: none}}  # the bucket is due at the wall clock's time, whatever hour it is
{channel_settings}""",
        encoding="utf-8",
    )
    (config / "campaigns" / campaign_file).write_text(
        campaign.format(day=due.date().isoformat(), slot=due.strftime("%H:%M"), **campaign_fields), encoding="utf-8"
    )
    for name, text in templates.items():
        (root / "templates" / "crash" / name).write_text(text, encoding="utf-8")
    contacts_csv = root / "contacts.csv"
    with contacts_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return CrashSetup(root, config, db, contacts_csv, due, big_email)


def write_setup(root: Path, smtp_port: int, due: datetime, *, contacts: int, big_index: int, rate: float) -> CrashSetup:
    """config/topslot.yaml (SQLite, the SMTP server), one campaign with one slot at ``due``, its
    templates, and a contacts CSV (consent yes, UTC) with one big-message recipient."""
    return _write_setup(
        root,
        due,
        channel_settings=f"""\
smtp:
  local: {{host: 127.0.0.1, port: {smtp_port}, tls: none, pool_size: 4, rate_per_second: {rate}}}
""",
        campaign_file="crash.yaml",
        campaign=CAMPAIGN,
        campaign_id=CAMPAIGN_ID,
        templates={"mail.html.j2": HTML, "mail.txt.j2": TEXT},
        header=["external_id", "email", "first_name", "country", "timezone", "consent_email", "big"],
        rows=(
            [f"c{i:04d}", email_of(i), f"Name{i}", "US", "UTC", "yes", "yes" if i == big_index else ""]
            for i in range(contacts)
        ),
        big_email=email_of(big_index),
    )


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOPSLOT_") and k != "NOTIFY_SOCKET"}
    env.update(extra)
    return env


async def topslot(
    setup: CrashSetup, *args: str, log: Path, prefix: Sequence[str] = (), **env: str
) -> asyncio.subprocess.Process:
    """Start ``topslot ARGS --config ...`` with stdout and stderr going to ``log``; ``prefix`` runs
    it under another command that execs it (the pid stays topslot's), e.g. ``DIE_WITH_PARENT``."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *prefix, *TOPSLOT, *args, "--config", str(setup.config),
            cwd=setup.root, env=child_env(**env), stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def sim_time(instant: datetime) -> str:
    """``--from`` text (UTC, no offset)."""
    return instant.strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------- the ledger, read as an operator would


@dataclass(frozen=True)
class Row:
    id: int
    state: str
    email: str
    coupon_code: str | None
    attempts: int


def _rows(db: Path, columns: str, campaign_id: str) -> list[tuple[Any, ...]]:
    """``columns`` (of ``d``, the delivery, and ``c``, its contact) of every delivery row of
    ``campaign_id`` (plain sqlite3; only reads)."""
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(
            f"SELECT {columns} FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE d.campaign_id = ?",
            (campaign_id,),
        ).fetchall()
    finally:
        con.close()


def ledger(db: Path) -> dict[int, Row]:
    """Every delivery row of the campaign, by id (plain sqlite3; only reads)."""
    rows = _rows(db, "d.id, d.state, c.email, d.coupon_code, d.attempts", CAMPAIGN_ID)
    return {r[0]: Row(*r) for r in rows}


def by_state(rows: Mapping[int, Any]) -> dict[str, set[int]]:
    states: dict[str, set[int]] = {}
    for row in rows.values():
        states.setdefault(row.state, set()).add(row.id)
    return states


def counts(rows: Mapping[int, Any]) -> dict[str, int]:
    return dict(Counter(r.state for r in rows.values()))


# ---------------------------------------------------------------- the SMTP server


class _BodyTap:
    """Stands in for the session's reader during DATA: reports the Message-ID as soon as that header
    arrives (the body is then on the wire) and notes whether the final dot came."""

    def __init__(self, reader: asyncio.StreamReader, on_message_id: Callable[[int], None]):
        self._reader = reader
        self._on_message_id = on_message_id
        self.delivery_id: int | None = None
        self.ended = False

    async def readline(self) -> bytes:
        line = await self._reader.readline()
        if self.delivery_id is None and (match := _MESSAGE_ID.match(line)):
            self.delivery_id = int(match.group(1))
            self._on_message_id(self.delivery_id)
        elif line == b".\r\n":
            self.ended = True
        return line

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)


class CrashSmtpServer(ScriptedSmtpServer):
    """The scripted server (real TCP), plus: ``on_body(delivery_id, rcpt)`` is called as each
    message's body starts arriving, and ``cut_short`` lists the deliveries whose body started but
    whose connection dropped before the final dot (never received)."""

    def __init__(self, *, on_body: Callable[[int, str], None] | None = None, **options: Any):
        super().__init__(**options)
        self.on_body = on_body
        self.bodies_started = 0
        self.cut_short: list[int] = []

    async def _data(self, s, reader, writer, reply) -> bool:  # type: ignore[no-untyped-def, override]
        rcpt = s.rcpt_to[0] if s.rcpt_to else ""

        def started(delivery_id: int) -> None:
            self.bodies_started += 1
            if self.on_body is not None:
                self.on_body(delivery_id, rcpt)

        tap = _BodyTap(reader, started)
        try:
            return await super()._data(s, tap, writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            if tap.delivery_id is not None and not tap.ended:
                self.cut_short.append(tap.delivery_id)
            raise

    def received_ids(self, *, accepted_only: bool = False) -> Counter[int]:
        """Delivery id → how many times a complete message (final dot seen; ``accepted_only``: and
        answered 250) carried it."""
        found: Counter[int] = Counter()
        for message in self.accepted() if accepted_only else self.received:
            match = _MESSAGE_ID.search(message.data[:16_384])
            assert match, f"a received message without a topslot Message-ID: {message.data[:300]!r}"
            found[int(match.group(1))] += 1
        return found


async def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def log_events(log: Path, name: str, *, start: int = 0) -> list[dict[str, Any]]:
    """The JSON log records of event ``name`` in a child's log (from byte ``start`` on), in order."""
    found = []
    text = log.read_bytes()[start:].decode(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


# ---------------------------------------------------------------- a kill in mid-bucket, then a restart (SMS, IM)


Ledger = Callable[[], Mapping[int, Any]]  # the campaign's rows now, by id (Row, SmsRow, ImRow)


@dataclass
class _OnRequest:
    """A fake provider (first base after this one) that calls ``on_request(n, recipient)`` as its
    n-th request (1-based, in arrival order) has been read and recorded, before it is answered."""

    on_request: Callable[[int, str], None] | None = None

    def behaviour(self, recipient: str) -> Any:
        if self.on_request is not None:
            self.on_request(len(self.requests), recipient)  # type: ignore[attr-defined]
        return super().behaviour(recipient)  # type: ignore[misc]


async def import_contacts(setup: CrashSetup, log: Path, **env: str) -> None:
    """``topslot contacts import`` of the setup's contacts CSV; it must succeed."""
    imported = await topslot(setup, "contacts", "import", str(setup.contacts_csv), log=log, **env)
    try:
        assert await imported.wait() == 0, tail(log)
    finally:
        if imported.returncode is None:
            imported.kill()


def kill_once_sent(current: dict[str, int], *, after: int, ledger: Ledger) -> Callable[[int, str], None]:
    """A fake's ``on_request`` that SIGKILLs the running daemon (``current["pid"]``) as the first
    request from the ``after``-th on arrives once a chunk is recorded as sent, and notes that
    request's number as ``current["killed"]``."""

    def on_request(n: int, recipient: str) -> None:
        if n < after or "pid" not in current or "killed" in current:
            return
        if "sent" in by_state(ledger()):
            os.kill(current["pid"], signal.SIGKILL)
            current["killed"] = n

    return on_request


async def run_until_killed(
    setup: CrashSetup,
    log: Path,
    current: dict[str, int],
    *,
    start: datetime,
    failpoint: str | None,
    step: str,
    timeout: float,
    ledger: Ledger,
    **env: str,
) -> float:
    """The first run: ``topslot run --from start`` (with ``TOPSLOT_FAILPOINT=failpoint`` if any), its
    pid in ``current["pid"]``. It must die by SIGKILL within ``timeout``; returns how long it ran."""
    fail = {"TOPSLOT_FAILPOINT": failpoint} if failpoint else {}
    started = time.monotonic()
    proc = await topslot(setup, "run", "--from", sim_time(start), log=log, **env, **fail)
    current["pid"] = proc.pid
    try:
        died = await wait_until(lambda: proc.returncode is not None, timeout)
    finally:
        if proc.returncode is None:
            proc.kill()  # also when the test's time is up
    assert died, f"the daemon did not die at {step}: {counts(ledger())}\n{tail(log)}"
    assert await proc.wait() == -signal.SIGKILL, tail(log)
    return time.monotonic() - started


async def run_until_finished(
    setup: CrashSetup,
    log: Path,
    current: dict[str, int],
    *,
    start: datetime,
    contacts: int,
    timeout: float,
    stop_timeout: float,
    ledger: Ledger,
    **env: str,
) -> float:
    """The restart: ``topslot run --from start``, its pid in ``current["pid"]``, until all ``contacts``
    rows are terminal and the daemon is ready; then SIGTERM, and it must exit 0 within
    ``stop_timeout``. Returns how long it took to finish."""
    started = time.monotonic()
    proc = await topslot(setup, "run", "--from", sim_time(start), log=log, **env)
    current["pid"] = proc.pid

    def finished() -> bool:
        rows = ledger()
        return (
            len(rows) == contacts
            and not any(r.state in NON_TERMINAL for r in rows.values())
            and bool(log_events(log, "daemon_ready"))
        )

    try:
        await wait_until(lambda: proc.returncode is not None or finished(), timeout)
        seconds = time.monotonic() - started
        assert proc.returncode is None, f"the restarted daemon stopped on its own\n{tail(log)}"
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), stop_timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert finished(), f"rows left unfinished: {counts(ledger())}\n{tail(log)}"
    assert code == 0, tail(log)
    return seconds


@dataclass(frozen=True)
class Recovered:
    sent: set[int]
    unknown: set[int]
    never_handed_over: set[int]  # claimed or planned at the kill


def assert_recovered_once(
    final: Mapping[int, Any], at_death: Mapping[int, Any], log: Path, *, contacts: int, step: str
) -> Recovered:
    """What the restart after a kill in mid-bucket must leave in the ledger, whatever the provider:
    every row terminal and tried once; what was settled stayed settled; ``unknown`` only rows that
    were ``sending`` at the kill, the others of those settled by the hand-over journal (as
    ``leases_recovered`` says); the rows never handed over sent; some rows, not all, sent before
    the kill."""
    states, states_at_death = by_state(final), by_state(at_death)
    sent, unknown = states.get("sent", set()), states.get("unknown", set())
    sending_at_death = states_at_death.get("sending", set())

    # every row terminal; every recipient accepts, so nothing may fail
    assert len(final) == contacts
    assert set(states) <= {"sent", "unknown"}, counts(final)
    assert {r.attempts for r in final.values()} == {1}
    assert all(final[d].coupon_code for d in sent | unknown)
    # what was settled before the kill stayed settled
    assert states_at_death.get("sent", set()) <= sent
    assert all(final[d] == at_death[d] for d in states_at_death.get("sent", set()))
    # the ambiguous window: of the rows the dead daemon had marked sending, only those on the wire
    assert sending_at_death, f"the kill at {step} did not land while sending: {counts(at_death)}"
    assert unknown <= sending_at_death
    recovered = log_events(log, "leases_recovered")
    assert recovered and recovered[0]["sending_to_unknown"] == len(unknown)
    by_journal = recovered[0].get("sending_to_planned", 0) + recovered[0].get("sending_to_sent", 0)
    assert len(unknown) + by_journal == len(sending_at_death)
    assert recovered[0]["claimed_to_planned"] == len(states_at_death.get("claimed", set()))
    # rows never handed over were sent after the restart
    never_handed_over = states_at_death.get("claimed", set()) | states_at_death.get("planned", set())
    assert never_handed_over, f"the kill at {step} was not mid-bucket: {counts(at_death)}"
    assert never_handed_over <= sent
    # mid-bucket: some rows had been sent and recorded before the kill
    assert 0 < len(states_at_death.get("sent", set())) < contacts, counts(at_death)
    return Recovered(sent, unknown, never_handed_over)


# ---------------------------------------------------------------- SMS through the fake Twilio

SMS_CAMPAIGN_ID = "crash-test-sms"

SMS_CAMPAIGN = """\
id: {campaign_id}
name: Crash test (SMS)
channels: [sms]
audience:
  all:
    - {{consent: sms}}
""" + SCHEDULE + """\
  sms:
    body: crash/sms.txt.j2
"""
SMS_TEXT = "{{ contact.first_name }}, your code {{ coupon }}: {{ track(landing_url) }}"


def phone_of(index: int) -> str:
    """A valid US mobile-format number per contact (``+1 415 555 0000`` + index)."""
    return f"+1415555{index:04d}"


@dataclass
class CrashTwilio(_OnRequest, FakeTwilio):
    """The fake Twilio, plus ``on_request(n, to)``: called as the n-th create request (1-based, in
    arrival order) has been read and recorded, before it is answered."""


def twilio_env(twilio: FakeTwilio) -> dict[str, str]:
    """What every ``topslot`` child needs for Twilio settings to load: the auth token (never in YAML)."""
    return {"TOPSLOT_TWILIO__AUTH_TOKEN": twilio.auth_token}


def write_sms_setup(
    root: Path, twilio: FakeTwilio, due: datetime, *, contacts: int, rate: float, max_in_flight: int
) -> CrashSetup:
    """config/topslot.yaml (SQLite, Twilio at the fake, no SMTP), one SMS campaign with one slot at
    ``due``, its template, and a contacts CSV of ``contacts`` phones (``phone_of``) with SMS consent.
    ``big_email`` is empty: there is no big message here."""
    return _write_setup(
        root,
        due,
        channel_settings=f"""\
twilio:
  account_sid: {twilio.account_sid}
  from_number: "{twilio.phone_number}"
  base_url: {twilio.url}
  rate_per_second: {rate}
  max_in_flight: {max_in_flight}
  timeout_seconds: 10
""",
        campaign_file="crash_sms.yaml",
        campaign=SMS_CAMPAIGN,
        campaign_id=SMS_CAMPAIGN_ID,
        templates={"sms.txt.j2": SMS_TEXT},
        header=["external_id", "phone", "first_name", "country", "timezone", "consent_sms"],
        rows=([f"s{i:04d}", phone_of(i), f"Name{i}", "US", "UTC", "yes"] for i in range(contacts)),
    )


@dataclass(frozen=True)
class SmsRow:
    id: int
    state: str
    phone: str
    coupon_code: str | None
    attempts: int
    provider: str | None
    provider_id: str | None
    segments: int | None


def sms_ledger(db: Path) -> dict[int, SmsRow]:
    """Every delivery row of the SMS campaign, by id (plain sqlite3; only reads)."""
    columns = "d.id, d.state, c.phone, d.coupon_code, d.attempts, d.provider, d.provider_id, d.segments"
    return {r[0]: SmsRow(*r) for r in _rows(db, columns, SMS_CAMPAIGN_ID)}


# ---------------------------------------------------------------- IM through the fake company gateway

IM_CAMPAIGN_ID = "crash-test-im"
IM_PROVIDER = "wecom"  # the webhook provider's name in im:, the contacts' im_wecom column

IM_CAMPAIGN = """\
id: {campaign_id}
name: Crash test (IM)
channels: [im]
audience:
  all:
    - {{consent: im}}
""" + SCHEDULE + """\
  im:
    provider: {provider}
    body: crash/im.txt.j2
    title: "An offer for {{{{ contact.first_name }}}}"
    button: Shop now
"""
IM_TEXT = "{{ contact.first_name }}, your code {{ coupon }}"


def im_id_of(index: int) -> str:
    """The contact's id on the gateway (the ``im_wecom`` column)."""
    return f"user-{index:04d}"


@dataclass
class CrashImGateway(_OnRequest, FakeImGateway):
    """The fake IM gateway, plus ``on_request(n, recipient)``: called as the n-th request (1-based, in
    arrival order, repeats of a forwarded key excepted) has been read, checked and recorded, before
    it is answered."""

    def posts_per_key(self, start: int = 0, end: int | None = None) -> Counter[str]:
        """Idempotency-Key → raw POSTs that carried it (forwarded, repeated or refused alike)."""
        return Counter(r.key for r in self.requests[start:end] if r.key is not None)


def im_env(gateway: FakeImGateway, provider: str = IM_PROVIDER) -> dict[str, str]:
    """What every ``topslot`` child needs for the IM settings to load: the signing secret (never in YAML)."""
    return {f"TOPSLOT_IM__{provider.upper()}__SECRET": gateway.secret}


def write_im_setup(
    root: Path, gateway: FakeImGateway, due: datetime, *, contacts: int, rate: float, max_in_flight: int
) -> CrashSetup:
    """config/topslot.yaml (SQLite, im.wecom a webhook provider at the fake gateway, no SMTP nor Twilio),
    one IM campaign with one slot at ``due``, its template, and a contacts CSV of ``contacts`` gateway ids
    (``im_id_of``) with IM consent. ``big_email`` is empty: there is no big message here."""
    return _write_setup(
        root,
        due,
        channel_settings=f"""\
im:
  {IM_PROVIDER}:
    kind: webhook
    url: {gateway.url}
    rate_per_second: {rate}
    max_in_flight: {max_in_flight}
    timeout_seconds: 10
""",
        campaign_file="crash_im.yaml",
        campaign=IM_CAMPAIGN,
        campaign_id=IM_CAMPAIGN_ID,
        provider=IM_PROVIDER,
        templates={"im.txt.j2": IM_TEXT},
        header=["external_id", "first_name", "country", "timezone", "consent_im", f"im_{IM_PROVIDER}"],
        rows=([f"m{i:04d}", f"Name{i}", "US", "UTC", "yes", im_id_of(i)] for i in range(contacts)),
    )


@dataclass(frozen=True)
class ImRow:
    id: int
    state: str
    im_id: str | None  # the contact's id on the provider
    coupon_code: str | None
    attempts: int
    provider: str | None
    provider_id: str | None


def im_ledger(db: Path, provider: str = IM_PROVIDER) -> dict[int, ImRow]:
    """Every delivery row of the IM campaign, by id (plain sqlite3; only reads)."""
    rows = _rows(db, "d.id, d.state, c.im_ids, d.coupon_code, d.attempts, d.provider, d.provider_id", IM_CAMPAIGN_ID)
    return {r[0]: ImRow(r[0], r[1], (json.loads(r[2]) if r[2] else {}).get(provider), *r[3:]) for r in rows}
