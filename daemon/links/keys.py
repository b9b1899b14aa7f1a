"""The HMAC signing keyring: keys by id, one of them signing new tokens, the others still verifying.

Keys come from ``settings.signing_keys`` (secrets: ``TOPSLOT_SIGNING_KEYS__<ID>`` or a credential
file ``signing_keys__<id>``); ``settings.signing_key_id`` chooses the key that signs (required when
there are several, since environment order means nothing). Rotation: add the new key everywhere,
switch ``signing_key_id`` to it, and keep the old key configured (it still verifies) for as long as
links signed with it must work: at least 30 days after the last message it signed (CAN-SPAM opt-out),
better the longest time a recipient may still click. Remove it and its tokens stop verifying.

With no key configured (the newcomer's demo) a random key is generated once into
``<var_dir>/secrets/signing-key`` (mode 0600) under the id ``local`` and the warning
``signing_key_generated`` is logged (never the key). Copy that file's content into
``TOPSLOT_SIGNING_KEYS__LOCAL`` to keep those links working after configuring real keys.

The same rules (``check_key_id``, ``check_key_material``, ``choose_active_id``) are applied when the
settings load (``topslot.settings``), so a bad key is a settings problem every command reports
before it starts; ``Keyring`` checks them again for keys that do not come from settings.

The raw key bytes never leave a ``Keyring``: callers ask for ``mac(key_id, purpose, message)``; each
purpose (link tokens, coupon codes, ...) gets its own derived subkey, so a MAC made for one purpose
is never valid for another. Key ids are case-insensitive (environment variable names are), 1-12
characters of ``a-z 0-9 _ -``, short so that tokens and ``mailto:`` local parts stay short.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from topslot.errors import TopslotError
from topslot.logs import get_logger

if TYPE_CHECKING:
    from topslot.settings import Settings

KEY_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,11}$")
MIN_KEY_BYTES = 16
GENERATED_KEY_ID = "local"
GENERATED_KEY_BYTES = 32
KEY_FILE = Path("secrets") / "signing-key"
_BLOCK = 64  # SHA-256 block size


class KeyringError(TopslotError):
    """The signing keys are misconfigured (bad id, too short, no active key, unreadable key file)."""


class _Mac:
    """HMAC-SHA256 with the inner and outer pads hashed once (about twice as fast per message)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:
        return "_Mac(...)"


class Keyring:
    """Signing keys by id; ``active_id`` signs new tokens, every key verifies."""

    __slots__ = ("_keys", "_active", "_macs")

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None):
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        normalised: dict[str, bytes] = {}
        for key_id, material in keys.items():
            kid = check_key_id(key_id)
            if kid in normalised:
                raise KeyringError(f"signing key id '{kid}' is given twice (ids are case-insensitive)")
            normalised[kid] = check_key_material(material, kid)
        active = choose_active_id(list(normalised), active)
        self._keys = normalised
        self._active = active
        self._macs: dict[tuple[str, str], _Mac] = {}

    @property
    def active_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return isinstance(key_id, str) and key_id in self._keys

    def mac(self, key_id: str, purpose: str, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under the ``purpose`` subkey of key ``key_id`` (KeyError if unknown)."""
        return self.mac_function(key_id, purpose)(message)

    def mac_function(self, key_id: str, purpose: str) -> Callable[[bytes], bytes]:
        """``mac`` with its key and purpose fixed, for many messages (KeyError if the key is unknown)."""
        state = self._macs.get((key_id, purpose))
        if state is None:
            subkey = hmac.digest(self._keys[key_id], b"topslot/" + purpose.encode("utf-8"), "sha256")
            state = self._macs[(key_id, purpose)] = _Mac(subkey)
        return state.digest

    def secret_values(self) -> list[str]:
        """The keys as text, for log redaction (``topslot.logs.Scrubber``); never log these."""
        return [k.decode("utf-8", "replace") for k in self._keys.values()]

    def __repr__(self) -> str:
        return f"Keyring(active={self._active!r}, ids={list(self._keys)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Keyring is not picklable (it holds secrets)")


_HOW_TO = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_key_id(key_id: str) -> str:
    """The lower-cased key id, or ``KeyringError`` when it is not 1-12 of ``a-z 0-9 _ -``."""
    kid = key_id.lower() if isinstance(key_id, str) else ""
    if not KEY_ID_RE.fullmatch(kid):
        raise KeyringError(f"signing key id {key_id!r} must be 1-12 characters of a-z, 0-9, _ and -")
    return kid


def check_key_material(material: bytes, key_id: str = "") -> bytes:
    """``material``, or ``KeyringError`` when it is not bytes or shorter than ``MIN_KEY_BYTES``.
    The message names the key by ``key_id`` (if given), never by its value."""
    if not isinstance(material, bytes) or len(material) < MIN_KEY_BYTES:
        which = f"signing key '{key_id}'" if key_id else "the signing key"
        raise KeyringError(f"{which} is shorter than {MIN_KEY_BYTES} bytes; use e.g. {_HOW_TO}")
    return material


def choose_active_id(key_ids: list[str], active: str | None) -> str:
    """The (lower-cased) id that signs new tokens: ``active``, or the only key; ``KeyringError`` when
    several keys leave the choice open or ``active`` is not one of them. ``key_ids`` are lower-case."""
    if not key_ids:
        raise KeyringError("a keyring needs at least one key")
    if active is None:
        if len(key_ids) > 1:
            raise KeyringError(
                f"several signing keys ({', '.join(sorted(key_ids))}): set signing_key_id "
                "(TOPSLOT_SIGNING_KEY_ID) to the one that signs new links"
            )
        return key_ids[0]
    active = active.lower()
    if active not in key_ids:
        raise KeyringError(f"signing_key_id '{active}' is not one of the signing keys ({', '.join(key_ids)})")
    return active


def load_keyring(settings: Settings) -> Keyring:
    """The keyring from settings; with no key configured, the generated key in ``<var_dir>``."""
    if settings.signing_keys:
        keys = {kid: secret.get_secret_value().encode("utf-8") for kid, secret in settings.signing_keys.items()}
        return Keyring(keys, settings.signing_key_id)
    return Keyring({GENERATED_KEY_ID: generated_key(settings.var_dir / KEY_FILE)})


def generated_key(path: Path) -> bytes:
    """The key kept in ``path``, created (random, mode 0600, atomically) when missing."""
    if not path.exists():
        _create_key_file(path)
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        material = path.read_text(encoding="utf-8").strip().encode("utf-8")
    except OSError as exc:
        raise KeyringError(f"cannot read the signing key file {path}: {exc.strerror}") from None
    if len(material) < MIN_KEY_BYTES:
        raise KeyringError(f"the signing key file {path} is empty or too short; delete it to generate a new one")
    return material


def _create_key_file(path: Path) -> None:
    """Write a fresh key to a temporary file and hard-link it into place: a racing process either
    wins (its key is used by both) or finds the complete file; nobody reads a half-written key."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = base64.urlsafe_b64encode(secrets.token_bytes(GENERATED_KEY_BYTES)).rstrip(b"=") + b"\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        finally:
            tmp.unlink()
    except OSError as exc:
        raise KeyringError(f"cannot create the signing key file {path}: {exc.strerror}") from None
    get_logger().warning("signing_key_generated", key_file=str(path), key_id=GENERATED_KEY_ID)
