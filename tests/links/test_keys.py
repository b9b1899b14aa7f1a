from __future__ import annotations

import io
import os
import pickle
import stat
import threading
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

from topslot.links.keys import (
    GENERATED_KEY_ID,
    KEY_FILE,
    Keyring,
    KeyringError,
    generated_key,
    load_keyring,
)
from topslot.links.tokens import UnknownKey, sign, verify
from topslot.logs import configure_logging
from topslot.settings import Settings

SECRET_1 = "first-secret-value-0123456789"
SECRET_2 = "second-secret-value-9876543210"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TOPSLOT_* variables leak in; cwd is a tmp dir (so no config/topslot.yaml is read)."""
    for name in list(os.environ):
        if name.upper().startswith("TOPSLOT_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(tmp_path: Path, **kwargs: object) -> Settings:
    return Settings(config_dir=tmp_path / "config", var_dir=tmp_path / "var", **kwargs)


def test_ids_are_case_insensitive_and_the_only_key_signs() -> None:
    ring = Keyring({"K2026": SECRET_1.encode()})
    assert ring.active_id == "k2026" and ring.key_ids == ("k2026",) and "k2026" in ring


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ({}, None, "at least one key"),
        ({"a": SECRET_1.encode(), "b": SECRET_2.encode()}, None, "set signing_key_id"),
        ({"a": SECRET_1.encode()}, "b", "not one of"),
        ({"a": b"short"}, None, "shorter than 16"),
        ({"a": SECRET_1}, None, "shorter than 16"),  # text, not bytes
        ({"has space": SECRET_1.encode()}, None, "1-12 characters"),
        ({"thirteen-char": SECRET_1.encode()}, None, "1-12 characters"),
        ({"": SECRET_1.encode()}, None, "1-12 characters"),
        ({"k1": SECRET_1.encode(), "K1": SECRET_2.encode()}, "k1", "twice"),
    ],
)
def test_misconfigured_keyrings_are_refused_with_a_reason(keys: dict, active: str | None, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring(keys, active)


def test_keys_never_show_in_repr_str_or_pickles() -> None:
    ring = Keyring({"k1": SECRET_1.encode(), "k2": SECRET_2.encode()}, active="k2")
    for text in (repr(ring), str(ring), f"{ring!r}"):
        assert SECRET_1 not in text and SECRET_2 not in text
    ring.mac("k1", "x", b"m")
    assert SECRET_1 not in repr(ring._macs)
    assert repr(ring) == "Keyring(active='k2', ids=['k1', 'k2'])"
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    assert set(ring.secret_values()) == {SECRET_1, SECRET_2}


def test_mac_differs_per_purpose_and_per_key() -> None:
    ring = Keyring({"k1": SECRET_1.encode(), "k2": SECRET_2.encode()}, active="k1")
    macs = {ring.mac("k1", "a", b"m"), ring.mac("k1", "b", b"m"), ring.mac("k2", "a", b"m")}
    assert len(macs) == 3 and all(len(m) == 32 for m in macs)
    assert ring.mac("k1", "a", b"m") == ring.mac("k1", "a", b"m")
    with pytest.raises(KeyError):
        ring.mac("nope", "a", b"m")


def test_settings_keys_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K2025", SECRET_1)
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__K2026", SECRET_2)
    monkeypatch.setenv("TOPSLOT_SIGNING_KEY_ID", "k2026")

    ring = load_keyring(settings(tmp_path))

    assert ring.active_id == "k2026" and set(ring.key_ids) == {"k2025", "k2026"}
    assert not (tmp_path / "var" / KEY_FILE).exists()  # nothing generated when keys are configured
    old = sign(Keyring({"k2025": SECRET_1.encode()}), "unsubscribe", 3)
    assert verify(old, ring).key_id == "k2025"


def test_settings_with_one_key_need_no_key_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__ONLY", SECRET_1)
    assert load_keyring(settings(tmp_path)).active_id == "only"


def test_settings_with_several_keys_need_a_key_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked when the settings load (the keyring's own rule), so no command gets as far as the keyring."""
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__A", SECRET_1)
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__B", SECRET_2)
    expected = r"several signing keys \(a, b\): set signing_key_id \(TOPSLOT_SIGNING_KEY_ID\)"
    with pytest.raises(ValidationError, match=expected):
        settings(tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOPSLOT_SIGNING_KEYS__K1": "short"}, "the signing key is shorter than 16 bytes"),
        ({"TOPSLOT_SIGNING_KEYS__HAS.DOT": SECRET_1}, "signing key id 'has.dot' must be 1-12 characters"),
        ({"TOPSLOT_SIGNING_KEYS__K1": SECRET_1, "TOPSLOT_SIGNING_KEY_ID": "k2"}, "'k2' is not one of the signing keys"),
    ],
    ids=["short", "bad id", "unknown active id"],
)
def test_settings_refuse_what_the_keyring_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message) as caught:
        settings(tmp_path)
    assert "short" not in str(caught.value).replace("shorter", "")  # never the key itself


def test_without_keys_a_key_is_generated_once_private_and_never_logged(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    try:
        with capture_logs() as first_logs:
            ring = load_keyring(settings(tmp_path))
        path = tmp_path / "var" / KEY_FILE
        key_text = path.read_text().strip()
        with capture_logs() as second_logs:
            again = load_keyring(settings(tmp_path))
    finally:
        structlog.reset_defaults()

    assert ring.active_id == again.active_id == GENERATED_KEY_ID
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(key_text) == 43  # 32 random bytes, base64url
    token = sign(ring, "unsubscribe", 11)
    assert verify(token, again).delivery_id == 11  # same key after a restart
    assert [e["event"] for e in first_logs] == ["signing_key_generated"]
    assert first_logs[0]["log_level"] == "warning" and first_logs[0]["key_file"] == str(path)
    assert second_logs == []
    everything = repr(first_logs) + stream.getvalue() + repr(ring)
    assert key_text not in everything


def test_a_generated_key_stops_verifying_once_real_keys_replace_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = load_keyring(settings(tmp_path))
    token = sign(demo, "unsubscribe", 1)
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__PROD", SECRET_1)
    with pytest.raises(UnknownKey):
        verify(token, load_keyring(settings(tmp_path)))
    # the documented way to keep them working: configure the file's content as key "local"
    monkeypatch.setenv("TOPSLOT_SIGNING_KEYS__LOCAL", (tmp_path / "var" / KEY_FILE).read_text().strip())
    monkeypatch.setenv("TOPSLOT_SIGNING_KEY_ID", "prod")
    assert verify(token, load_keyring(settings(tmp_path))).key_id == "local"


def test_racing_processes_share_one_generated_key(tmp_path: Path) -> None:
    path = tmp_path / "var" / KEY_FILE
    barrier = threading.Barrier(8)
    results: list[bytes] = []

    def load() -> None:
        barrier.wait()
        results.append(generated_key(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 8 and len(set(results)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["signing-key"]  # no temporary files left


def test_a_loose_key_file_is_made_private_and_an_empty_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing-key"
    path.write_text("a" * 43 + "\n")
    path.chmod(0o644)
    assert generated_key(path) == b"a" * 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("\n")
    with pytest.raises(KeyringError, match="delete it"):
        generated_key(path)


def test_an_unwritable_var_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KeyringError, match="cannot create"):
        generated_key(blocker / "secrets" / "signing-key")
