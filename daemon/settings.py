"""Process settings: what the daemon needs to run (not what a campaign says).

Sources, highest priority first:

1. keyword arguments to ``load_settings`` / ``Settings(...)``;
2. environment variables ``TOPSLOT_<FIELD>``, nested with ``__``: ``TOPSLOT_SMTP__PRIMARY__PORT=2525``
   (SMTP servers and IM providers are maps keyed by a name you choose, so no list indexes);
3. secret files: one file per setting, named like its variable with or without ``TOPSLOT_``
   (``smtp__primary__password``), in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) or
   ``$TOPSLOT_SECRETS_DIR``;
4. ``<config_dir>/topslot.yaml``;
5. the defaults below.

Secrets (``SecretStr``) may come only from 1–3: a secret in ``topslot.yaml`` is an error that names
the exact variable and credential file to use instead for that key. The names of map entries you
choose (SMTP servers, IM providers, signing key ids) are case-insensitive, like variable names, and
are kept lower-case. Relative paths (and a relative SQLite database path) are resolved against the
working directory when settings are loaded.

Checked with the settings, so ``topslot validate`` and every command report them before anything
runs: the database URL's kind (SQLite or PostgreSQL) and the signing keys as the keyring will use
them (ids, length, which one signs). An error outside ``topslot.yaml`` is located at the
environment variable or credential file that holds the value; values are never shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from topslot.campaign import CountryCode, FrequencyCap
from topslot.channel import CHANNELS, SPECS, Channel
from topslot.errors import InvalidInput, Problem
from topslot.links.keys import KeyringError, check_key_id, check_key_material, choose_active_id
from topslot.pacing import QuietRules, window_text
from topslot.patterns import MessagingServiceSid, PhoneNumber, ProviderName
from topslot.store.db import sqlite_database_file

T = TypeVar("T")
ENV_PREFIX = "TOPSLOT_"
NESTED = "__"
SETTINGS_FILE = "topslot.yaml"


def _keyring_rule(check: Callable[[], T]) -> T:
    """``check()``, its ``KeyringError`` turned into the ``ValueError`` pydantic reports."""
    try:
        return check()
    except KeyringError as exc:
        raise ValueError(str(exc)) from None


def _signing_key_id(value: str) -> str:
    """A signing key id as the keyring takes it: lower-cased, 1-12 of ``a-z 0-9 _ -``."""
    return _keyring_rule(lambda: check_key_id(value))


def _signing_key(value: SecretStr) -> SecretStr:
    """A signing key long enough for the keyring (the message never shows the value)."""
    _keyring_rule(lambda: check_key_material(value.get_secret_value().encode("utf-8")))
    return value


SigningKeyId = Annotated[str, AfterValidator(_signing_key_id)]
SigningKey = Annotated[SecretStr, AfterValidator(_signing_key)]
DATABASE_URL_HINT = "use sqlite+aiosqlite:///path/to/topslot.db or postgresql+asyncpg://user@host/database"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SmtpServer(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=25, gt=0, lt=65536)
    tls: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    pool_size: int = Field(default=4, ge=1, le=200)
    rate_per_second: float = Field(default=50.0, gt=0)
    max_per_domain: int = Field(default=20, ge=1)


TWILIO_API = "https://api.twilio.com"
DEFAULT_SMS_HELP = "{sender}: marketing messages. Reply STOP to opt out, START to opt back in."


class TwilioSettings(_Section):
    """SMS through Twilio. Configured (``account_sid`` set) → SMS go to Twilio; else to the outbox."""

    account_sid: str | None = Field(default=None, pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr | None = None
    from_number: PhoneNumber | None = None
    messaging_service_sid: MessagingServiceSid | None = None
    rate_per_second: float = Field(default=1.0, gt=0)  # messages per second, all campaigns together
    base_url: str = Field(default=TWILIO_API, pattern=r"^https?://[^\s/]+(:[0-9]+)?/?$")  # tests, rehearsals
    timeout_seconds: float = Field(default=15.0, gt=0, le=120)  # one create request, end to end
    max_in_flight: int = Field(default=20, ge=1, le=500)  # requests open at once
    status_callbacks: bool = True  # ask Twilio to POST delivery receipts to {tracking_base_url}/twilio/status
    help_text: str = Field(default=DEFAULT_SMS_HELP, min_length=1, max_length=320)  # the answer to HELP / INFO

    @model_validator(mode="after")
    def _complete(self) -> TwilioSettings:
        if self.account_sid and not (self.from_number or self.messaging_service_sid):
            raise ValueError("twilio needs from_number or messaging_service_sid")
        if self.account_sid and self.auth_token is None:
            raise ValueError(
                "twilio.account_sid is set but the auth token is not: set TOPSLOT_TWILIO__AUTH_TOKEN "
                "or the credential file twilio__auth_token"
            )
        return self

    @property
    def configured(self) -> bool:
        return self.account_sid is not None


_HTTP_URL = r"^https?://[^\s/]+(:[0-9]+)?(/\S*)?$"


class _ImProviderBase(_Section):
    """What every IM provider has. Its name in ``im:`` is also the key of ``contacts.im_ids`` (the
    ``im_<name>`` import column) that holds each contact's id on that network."""

    rate_per_second: float = Field(default=20.0, gt=0)  # messages per second, all campaigns together
    timeout_seconds: float = Field(default=15.0, gt=0, le=120)  # one request, end to end
    max_in_flight: int = Field(default=20, ge=1, le=500)  # requests open at once


class TelegramProvider(_ImProviderBase):
    """A Telegram bot (Bot API ``sendMessage``); the token (required: ``Settings`` checks it, naming
    the variable): ``TOPSLOT_IM__<NAME>__TOKEN``."""

    kind: Literal["telegram"]
    token: SecretStr | None = None
    base_url: str = Field(default="https://api.telegram.org", pattern=_HTTP_URL)  # tests, rehearsals
    rate_per_second: float = Field(default=25.0, gt=0)  # Telegram allows ~30/s per bot, 1/s per chat


class WhatsAppProvider(_ImProviderBase):
    """WhatsApp through Twilio (the ``twilio`` account settings); approved templates (content SIDs)."""

    kind: Literal["whatsapp"]
    from_number: PhoneNumber | None = None  # the WhatsApp sender
    messaging_service_sid: MessagingServiceSid | None = None

    @model_validator(mode="after")
    def _sender(self) -> WhatsAppProvider:
        if not (self.from_number or self.messaging_service_sid):
            raise ValueError("a whatsapp provider needs from_number or messaging_service_sid")
        return self


class WebhookProvider(_ImProviderBase):
    """A company's own IM gateway (WeCom, DingTalk, Feishu, ...): one signed JSON POST per message;
    the signing secret (required: ``Settings`` checks it, naming the variable):
    ``TOPSLOT_IM__<NAME>__SECRET``."""

    kind: Literal["webhook"]
    url: str = Field(pattern=_HTTP_URL)
    secret: SecretStr | None = None

    @model_validator(mode="after")
    def _secret(self) -> WebhookProvider:
        if self.secret is not None and len(self.secret.get_secret_value().encode()) < 16:
            raise ValueError("the webhook signing secret must be at least 16 bytes")
        return self


ImProvider = Annotated[TelegramProvider | WhatsAppProvider | WebhookProvider, Field(discriminator="kind")]


DEFAULT_SMS_OPT_OUT = {"default": "Reply STOP to opt out", "CN": "回TD退订"}
MAX_SMS_OPT_OUT_CHARS = 100


class Compliance(_Section):
    postal_address: str = ""
    sender_identity: str = ""
    cn_ad_prefix: str = "【广告】"
    # The line topslot ends every SMS with, by the recipient's country (ISO 3166 alpha-2) or
    # "default"; merged over DEFAULT_SMS_OPT_OUT, "" for none (topslot.rendering.compliance).
    sms_opt_out: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SMS_OPT_OUT))

    @field_validator("sms_opt_out", mode="before")
    @classmethod
    def _opt_out_lines(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic reports the type
        lines = dict(DEFAULT_SMS_OPT_OUT)
        for key, text in value.items():
            if not isinstance(key, str):  # YAML reads NO (Norway) as false, ON as true
                raise ValueError(f"key {key!r} is not a country code: quote it (e.g. 'NO': ...)")
            code = "default" if key.strip().lower() == "default" else key.strip().upper()
            if code != "default" and not (len(code) == 2 and code.isascii() and code.isalpha()):
                raise ValueError(f"key {key!r} must be 'default' or a two-letter country code such as CN")
            if not isinstance(text, str):
                raise ValueError(f"{code}: the opt-out line must be text ('' for none)")
            line = " ".join(text.split())  # one line, single spaces
            if len(line) > MAX_SMS_OPT_OUT_CHARS:
                raise ValueError(f"{code}: the opt-out line is longer than {MAX_SMS_OPT_OUT_CHARS} characters")
            lines[code] = line
        return lines

    def sms_opt_out_for(self, country: str | None) -> str:
        """The opt-out line for an SMS to a recipient in ``country`` (else the default; "" for none)."""
        if country:
            line = self.sms_opt_out.get(country.strip().upper())
            if line is not None:
                return line
        return self.sms_opt_out.get("default", "")


QuietWindow = Annotated[str | None, BeforeValidator(window_text)]


class BounceSettings(_Section):
    """Asynchronous bounces, complaints and ``mailto:`` unsubscribes (``topslot.bounces``)."""

    # The VERP domain: each message's envelope sender becomes {local}+{token}@{domain} (its From is
    # unchanged), and mailto: unsubscribes go to unsubscribe+{token}@{domain}; unset: the From
    # address is the envelope sender and bounces are matched by the returned headers only.
    domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
    local: str = Field(default="bounce", pattern=r"^[a-z0-9][a-z0-9._-]{0,30}$")
    # The receiver: LMTP (what Postfix's lmtp transport speaks) or SMTP, on listen_host:listen_port;
    # unset: no receiver (topslot bounces import reads mailboxes instead).
    listen_host: str = "127.0.0.1"
    listen_port: int | None = Field(default=None, ge=0, lt=65536)
    protocol: Literal["lmtp", "smtp"] = "lmtp"
    soft_limit: int = Field(default=3, ge=1, le=100)  # soft bounces of one address before it is suppressed
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024, le=50 * 1024 * 1024)


class QuietHours(_Section):
    """Local hours in which a channel must not reach a recipient ("HH:MM-HH:MM", or none), per channel
    and, under ``countries``, per recipient country (topslot.pacing)."""

    email: QuietWindow = SPECS["email"].quiet_hours
    sms: QuietWindow = SPECS["sms"].quiet_hours
    im: QuietWindow = SPECS["im"].quiet_hours
    countries: dict[CountryCode, dict[Channel, QuietWindow]] = Field(default_factory=dict)

    def rules(self) -> QuietRules:
        return QuietRules({ch: getattr(self, ch) for ch in CHANNELS}, self.countries)


assert set(CHANNELS) <= set(QuietHours.model_fields), "every channel has its quiet_hours setting"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # a ValidationError's text never holds a value (secrets among them)
    )

    config_dir: Path = Path("config")
    templates_dir: Path = Path("templates")
    var_dir: Path = Path("var")
    outbox_dir: Path | None = None  # default: <var_dir>/outbox
    database_url: str = "sqlite+aiosqlite:///var/topslot.db"
    # Where every node's shared rate and domain limits live (topslot.channels.limits): unset, in the
    # PostgreSQL database (on SQLite: in the one process); set, in this Redis (needs topslot[redis]).
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://\S+$")
    redis_key_prefix: str = Field(default="topslot", pattern=r"^[A-Za-z0-9_.:-]{1,60}$")  # keys: <prefix>:limits:...
    default_timezone: str = "UTC"
    default_country: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    tracking_base_url: str = Field(default="http://127.0.0.1:8080", pattern=r"^https?://\S+$")
    tracking_host: str = "127.0.0.1"
    tracking_port: int = Field(default=8080, ge=0, lt=65536)
    tracking_trusted_proxies: list[str] = Field(default_factory=list)  # IPs/CIDRs whose X-Forwarded-For is believed
    # A port of its own for /metrics (with /healthz and /readyz), e.g. 9464, kept off the public
    # tracking port; unset: /metrics is served on the tracking port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, lt=65536)
    smtp: dict[str, SmtpServer] = Field(default_factory=dict)
    dispatch_processes: int = Field(default=1, ge=1, le=64)  # processes sending each bucket (one per core)
    # Scale-out (docs/scale-out.md): a process whose heartbeat is older than ``node_timeout_s`` is dead
    # (the other nodes take its rows back at once) and fences itself (sends nothing) when its own
    # heartbeat could not be written for 2/3 of it; a row's lease is the last safety net behind that.
    node_timeout_s: float = Field(default=10.0, ge=3.0, le=300.0)
    lease_s: float = Field(default=900.0, ge=30.0, le=86_400.0)
    # Record each message's hand-over (fsynced, in <var_dir>/journal) before it leaves, so that a crash
    # leaves only the messages really on the wire ``unknown`` (topslot.dispatch.journal). Turn it off
    # only where fsync is very slow (a network file system): then every row ``sending`` at a crash is.
    handover_journal: bool = True
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    im: dict[ProviderName, ImProvider] = Field(default_factory=dict)
    compliance: Compliance = Field(default_factory=Compliance)
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    bounces: BounceSettings = Field(default_factory=BounceSettings)
    # per channel, e.g. {"email": {"max": 3, "per": "7d"}, "sms": {"max": 1, "per": "7d"}}; none by default
    frequency_caps: dict[Channel, FrequencyCap] = Field(default_factory=dict)
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"  # topslot.event_loop: uvloop when installed
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # secrets: environment or secret files only
    signing_keys: dict[SigningKeyId, SigningKey] = Field(default_factory=dict)
    conversion_webhook_key: SecretStr | None = None
    feedback_webhook_key: SecretStr | None = None  # POST /feedback (topslot.bounces.webhook)
    # after signing_keys, so that its check sees them
    signing_key_id: str | None = None  # which of signing_keys signs new links (required when several)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not an IANA time zone") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_kind(cls, value: str) -> str:
        try:
            backend = make_url(value).get_backend_name()
        except (ArgumentError, ValueError):
            backend = None
        if backend not in ("sqlite", "postgresql"):  # the message never repeats the URL: it may hold a password
            raise ValueError(f"not a database URL topslot can use; {DATABASE_URL_HINT}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_client(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                import redis.asyncio  # noqa: F401
            except ImportError:
                raise ValueError("redis_url is set but the redis package is not installed: "
                                 "pip install 'topslot[redis]'") from None  # fmt: skip
        return value

    @field_validator("signing_key_id")
    @classmethod
    def _active_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "signing_keys" not in info.data:  # the keys are invalid: reported already
            return value
        keys = sorted(info.data["signing_keys"])
        if not keys:
            if value is None:
                return None  # the generated key signs (topslot.links.keys)
            missing = env_var_for(("signing_keys", value))
            raise ValueError(f"signing_key_id '{value}' names no key: no signing_keys are configured (set {missing})")
        active = _keyring_rule(lambda: choose_active_id(keys, value))
        return None if value is None else active

    @model_validator(mode="after")
    def _sections_agree(self) -> Settings:
        """Checks across sections, every one reported at the setting it concerns (``im.<name>`` ...)."""
        found: list[tuple[tuple[str, ...], str]] = []
        for name, provider in self.im.items():
            if provider.kind == "whatsapp" and not self.twilio.configured:
                needs = f"im.{name} sends WhatsApp through Twilio: configure twilio (account_sid, auth_token)"
                found.append((("im", name), needs))
            elif isinstance(provider, TelegramProvider) and provider.token is None:
                path = ("im", name, "token")
                found.append((path, f"a telegram provider needs its bot token: {where_to_set(path)}"))
            elif isinstance(provider, WebhookProvider) and provider.secret is None:
                path = ("im", name, "secret")
                found.append((path, f"a webhook provider needs its signing secret: {where_to_set(path)}"))
        if self.twilio.configured and "{sender}" in self.twilio.help_text and not self.compliance.sender_identity:
            found.append((
                ("compliance", "sender_identity"),
                "compliance.sender_identity is empty but twilio.help_text says {sender}: set it (the answer to "
                "HELP must say who is sending), or write twilio.help_text without {sender}",
            ))  # fmt: skip
        if self.lease_s < 3 * self.node_timeout_s:  # the lease is the net behind the heartbeat, never before it
            found.append((("lease_s",), f"lease_s ({self.lease_s:g}) must be at least 3 x node_timeout_s "
                                        f"({self.node_timeout_s:g}): a lease is the last safety net"))  # fmt: skip
        if found:  # raised as a ValidationError, pydantic keeps each error's own location
            errors = [_error_at(loc, message) for loc, message in found]
            raise ValidationError.from_exception_data(type(self).__name__, errors, hide_input=True)
        return self

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        base = Path.cwd()
        for name in ("config_dir", "templates_dir", "var_dir"):
            object.__setattr__(self, name, _absolute(getattr(self, name), base))
        outbox = self.outbox_dir if self.outbox_dir is not None else self.var_dir / "outbox"
        object.__setattr__(self, "outbox_dir", _absolute(outbox, base))
        object.__setattr__(self, "database_url", resolve_sqlite_url(self.database_url, base))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_dir = getattr(init_settings, "init_kwargs", {}).get("config_dir")
        return (
            init_settings,
            env_settings,
            SecretFilesSource(settings_cls),
            YamlFileSource(settings_cls, config_dir),
        )

    # ---- conveniences for the rest of topslot

    def secret_values(self) -> list[str]:
        """Every secret's plain value (for log redaction), the database URL's password among them."""
        values = [s.get_secret_value() for s in _secrets(self) if s.get_secret_value()]
        redis = database_passwords(self.redis_url) if self.redis_url else []
        return values + database_passwords(self.database_url) + redis

    @property
    def campaigns_dir(self) -> Path:
        return self.config_dir / "campaigns"

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when the URL is SQLite on disk, else None."""
        return sqlite_database_file(self.database_url)


def load_settings(config_dir: Path | str | None = None, **overrides: Any) -> Settings:
    """Read settings from every source; raise ``InvalidInput`` listing every problem found."""
    if config_dir is not None:
        overrides["config_dir"] = Path(config_dir)
    directory = config_dir_for(overrides.get("config_dir"))
    yaml_path = directory / SETTINGS_FILE
    _, marks, problems = read_settings_yaml(yaml_path)
    problems += read_secret_files(set(Settings.model_fields))[1]
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += [_locate(err, yaml_path, marks) for err in exc.errors()]
        raise InvalidInput(problems) from None
    if problems:
        raise InvalidInput(problems)
    return settings


# ---------------------------------------------------------------- paths


def _error_at(loc: tuple[str, ...], message: str) -> InitErrorDetails:
    """A value error of the setting at ``loc`` (``message`` taken as it is: it may hold braces)."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return InitErrorDetails(type=error, loc=loc, input=None)


def _absolute(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def resolve_sqlite_url(url: str, base: Path) -> str:
    """Make a relative SQLite file path absolute (``sqlite+aiosqlite:///var/x.db`` → ``.../var/x.db``)."""
    scheme, sep, rest = url.partition(":///")
    if not sep or not scheme.startswith("sqlite") or rest.startswith(("/", "file:")) or rest in ("", ":memory:"):
        return url  # absolute, in memory, or a ``file:`` URI (SQLite reads it as written)
    path, q, query = rest.partition("?")
    return f"{scheme}:///{(base / path).resolve()}{q}{query}"


def config_dir_for(explicit: Any) -> Path:
    """The configuration directory: ``explicit``, else ``TOPSLOT_CONFIG_DIR``, else ``config``."""
    if explicit is not None:
        return Path(explicit)
    for name, value in os.environ.items():
        if name.upper() == ENV_PREFIX + "CONFIG_DIR":
            return Path(value)
    return Path("config")


# ---------------------------------------------------------------- secrets


def secret_paths() -> list[tuple[str, ...]]:
    """Setting paths that are secrets; ``*`` stands for any map key."""
    return [
        ("smtp", "*", "password"),
        ("twilio", "auth_token"),
        ("im", "*", "token"),
        ("im", "*", "secret"),
        ("signing_keys",),
        ("signing_keys", "*"),
        ("conversion_webhook_key",),
        ("feedback_webhook_key",),
    ]


def env_var_for(path: tuple[str, ...]) -> str:
    """The environment variable of a setting path: ``("smtp", "primary", "password")`` →
    ``TOPSLOT_SMTP__PRIMARY__PASSWORD``."""
    return ENV_PREFIX + NESTED.join(p.upper() for p in path)


def credential_file_for(path: tuple[str, ...]) -> str:
    """The credential (secret) file name of a setting path: ``smtp__primary__password``."""
    return NESTED.join(p.lower() for p in path)


# Maps keyed by names the operator chooses. Variable and file names are case-insensitive (they
# arrive lower-cased), so these names are too: topslot.yaml's keys are lower-cased on reading,
# which lets TOPSLOT_SMTP__PRIMARY__PASSWORD complete a server written ``Primary:``.
NAMED_MAPS = frozenset({("smtp",), ("im",), ("signing_keys",)})
CREDENTIAL_DIRS = "$CREDENTIALS_DIRECTORY or $TOPSLOT_SECRETS_DIR"


def _secrets(settings: Settings) -> Iterator[SecretStr]:
    for server in settings.smtp.values():
        if server.password is not None:
            yield server.password
    if settings.twilio.auth_token is not None:
        yield settings.twilio.auth_token
    for provider in settings.im.values():
        for secret in (getattr(provider, "token", None), getattr(provider, "secret", None)):
            if secret is not None:
                yield secret
    yield from settings.signing_keys.values()
    if settings.conversion_webhook_key is not None:
        yield settings.conversion_webhook_key
    if settings.feedback_webhook_key is not None:
        yield settings.feedback_webhook_key


def database_passwords(url: str) -> list[str]:
    """The password of a database URL, and the values of its query parameters naming a password or
    secret (the ones ``display_url`` hides), so that the log never shows them either."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return []
    found = [u.password] if u.password else []
    if written := _URL_PASSWORD.match(url):  # as written too: percent-escaped, it differs
        found.append(written["password"])
    for key, value in u.query.items():
        if "password" in key.lower() or "secret" in key.lower():
            found += [value] if isinstance(value, str) else list(value)
    return sorted({str(v) for v in found if v})


_URL_PASSWORD = re.compile(r"[\w+]+://[^:/@]*:(?P<password>[^@]*)@")  # SQLAlchemy's own URL pattern


def _is_secret(path: tuple[str, ...]) -> bool:
    for pattern in secret_paths():
        if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path, strict=True)):
            return True
    return False


class SecretFilesSource(PydanticBaseSettingsSource):
    """One file per setting in ``$CREDENTIALS_DIRECTORY`` and/or ``$TOPSLOT_SECRETS_DIR``.

    The file name is the environment variable's name, with or without ``TOPSLOT_``, any case:
    ``smtp__primary__password`` holds ``TOPSLOT_SMTP__PRIMARY__PASSWORD``. Files whose name is not
    a setting are ignored (a credentials directory may hold other things).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data, _ = read_secret_files(set(self.settings_cls.model_fields))
        return data


MAX_SECRET_FILE_BYTES = 64 * 1024  # a key or password is far smaller: a larger file is the wrong file


def read_secret_files(fields: set[str]) -> tuple[dict[str, Any], list[Problem]]:
    """The settings held in the secret directories' files (nested by ``__``), and the problems of the
    files that cannot be used (unreadable, larger than ``MAX_SECRET_FILE_BYTES``, not UTF-8): each
    named by its file, never showing its content; such a file sets nothing."""
    data: dict[str, Any] = {}
    problems: list[Problem] = []
    for file in _secret_files(problems):
        name = file.name.lower()
        if name.startswith(ENV_PREFIX.lower()):
            name = name[len(ENV_PREFIX) :]
        path = name.split(NESTED)
        if path[0] not in fields:
            continue
        try:
            value = _secret_file_text(file)
        except ValueError as exc:
            problems.append(Problem(str(file), 0, 0, f"{'.'.join(path)}: {exc}"))
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value.rstrip("\r\n")
    return data, problems


def _secret_file_text(file: Path) -> str:
    """The text of a credential file; ``ValueError`` saying why it cannot be used (never its content)."""
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"the credential file cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"the credential file is larger than {MAX_SECRET_FILE_BYTES >> 10} KiB; is it the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the credential file is not UTF-8 text; save it as UTF-8") from None


def _secret_files(problems: list[Problem] | None = None) -> list[Path]:
    """The files of the secret directories, sorted per directory; a directory that cannot be listed
    is a problem (when ``problems`` is given) and lists nothing."""
    files: list[Path] = []
    for directory in secret_dirs():
        try:
            files += sorted(f for f in directory.iterdir() if f.is_file())
        except OSError as exc:
            if problems is not None:
                problems.append(Problem(str(directory), 0, 0, f"cannot list the secrets directory: {exc.strerror}"))
    return files


def secret_dirs() -> list[Path]:
    dirs = [os.environ.get("CREDENTIALS_DIRECTORY"), os.environ.get(ENV_PREFIX + "SECRETS_DIR")]
    return [Path(d) for d in dirs if d and Path(d).is_dir()]


def secret_refusal(path: tuple[str, ...]) -> str:
    """Why the secret at ``path`` cannot be in topslot.yaml, naming exactly where it goes instead."""
    refused = f"'{'.'.join(path)}' is a secret and must not be in topslot.yaml; "
    if _is_secret((*path, "*")):  # a whole map of secrets written as one value
        return refused + (
            f"set one per key: {env_var_for(path)}{NESTED}<ID> (environment) or a credential file named "
            f"{credential_file_for(path)}{NESTED}<id> (in {CREDENTIAL_DIRS})"
        )
    return refused + where_to_set(path)


def where_to_set(path: tuple[str, ...]) -> str:
    """How to give the secret at ``path``: its variable or its credential file."""
    return (
        f"set {env_var_for(path)} (environment) or a credential file named {credential_file_for(path)} "
        f"(in {CREDENTIAL_DIRS})"
    )


def source_of(path: tuple[str, ...]) -> str:
    """Where a setting that is not in topslot.yaml came from: its environment variable if set, else the
    credential file holding it, else (a keyword argument, say) the variable's name."""
    name = env_var_for(path)
    if any(var.upper() == name for var in os.environ):
        return name
    for file in _secret_files():
        if file.name.upper() in (name, name.removeprefix(ENV_PREFIX)):
            return str(file)
    return name


# ---------------------------------------------------------------- topslot.yaml


Marks = dict[tuple[str, ...], tuple[int, int]]


class YamlFileSource(PydanticBaseSettingsSource):
    """``<config_dir>/topslot.yaml`` with secrets removed (``load_settings`` reports them)."""

    def __init__(self, settings_cls: type[BaseSettings], config_dir: Any):
        super().__init__(settings_cls)
        self.path = config_dir_for(config_dir) / SETTINGS_FILE

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data, _, _ = read_settings_yaml(self.path)
        return data


def read_settings_yaml(path: Path) -> tuple[dict[str, Any], Marks, list[Problem]]:
    """Parse the settings file: (data without secrets, line/column of every key, problems)."""
    if not path.is_file():
        return {}, {}, []
    from topslot.yaml_source import MAX_FILE_BYTES, expansion_problem

    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return {}, {}, [Problem(str(path), 1, 1, f"cannot read the file: {exc.strerror or exc}")]
    if len(raw) > MAX_FILE_BYTES:
        return {}, {}, [Problem(str(path), 1, 1, f"larger than {MAX_FILE_BYTES // 1024} KiB; is it the right file?")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return {}, {}, [Problem(str(path), line, 1, "the file is not UTF-8 text; save it as UTF-8")]
    try:  # bounded first (size, depth, alias expansion), then composed
        too_big = expansion_problem(text, str(path))
        node = None if too_big else yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return {}, {}, [Problem(str(path), line, col, f"not valid YAML: {getattr(exc, 'problem', exc)}")]
    if too_big is not None:
        return {}, {}, [too_big]
    if node is None:
        return {}, {}, []
    marks: Marks = {}
    problems: list[Problem] = []
    data = _to_data(node, (), marks, problems, str(path))
    if not isinstance(data, dict):
        return {}, marks, [Problem(str(path), 1, 1, "topslot.yaml must be a mapping of setting: value")]
    return data, marks, problems


def _to_data(node: yaml.Node, path: tuple[str, ...], marks: Marks, problems: list[Problem], file: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        named = path in NAMED_MAPS
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value).lower() if named else str(key_node.value)
            here = (*path, key)
            position = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out or here in marks:
                note = " (names are case-insensitive)" if named else ""
                problems.append(Problem(file, *position, f"duplicate key '{key}'{note}"))
                continue
            marks[here] = position
            # A map of secrets (signing_keys) is opened so each key is refused with its own variable.
            if _is_secret(here) and not (isinstance(value_node, yaml.MappingNode) and _is_secret((*here, "*"))):
                problems.append(Problem(file, *position, secret_refusal(here)))
                continue
            out[key] = _to_data(value_node, here, marks, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(v, (*path, str(i)), marks, problems, file) for i, v in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _locate(error: Any, yaml_path: Path, marks: Marks) -> Problem:
    """A pydantic error as a problem at its topslot.yaml line, else at its variable or credential file."""
    loc = tuple(str(p) for p in error["loc"] if p != "[key]")  # "[key]": the map key itself is wrong
    name = ".".join(loc) or "settings"
    message = error["msg"].removeprefix("Value error, ")
    if not message.startswith(f"{name} "):  # "signing_key_id 'k9' is ..." names its setting already
        message = f"{name}: {message}"
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in marks:
            line, col = marks[loc[:depth]]
            return Problem(str(yaml_path), line, col, message)
    return Problem(source_of(loc) if loc else "settings", 0, 0, message)
