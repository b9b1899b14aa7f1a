"""The daemon starts the tracking server with its database and stops it (flushing) on close."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from topslot.links.keys import load_keyring
from topslot.links.tokens import sign
from topslot.runtime.service import Daemon
from topslot.settings import Settings


def settings(tmp_path: Path) -> Settings:
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    return Settings(
        config_dir=tmp_path / "config",
        var_dir=tmp_path / "var",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}",
        tracking_port=0,
    )


async def test_daemon_serves_tracking_and_releases_the_port(tmp_path: Path) -> None:
    s = settings(tmp_path)
    daemon = Daemon(s, watch=False, schedule=False, handle_signals=False, configure_logs=False)
    async with daemon:
        server = daemon.tracking
        assert server is not None and server.port
        token = sign(load_keyring(s), "open", 12345)  # the daemon's own (generated) key signs it
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as r:
                assert r.status == 200 and json.loads(await r.read())["status"] == "ok"
            async with http.get(f"{server.url}/o/{token}.gif") as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/gif"
            async with http.get(f"{server.url}/o/{sign(load_keyring(s), 'open', 1)[:-2]}xx.gif") as r:
                assert r.status == 404
        url = server.url
    assert server.stats.unknown == 1  # flushed at close: delivery 12345 does not exist
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{url}/healthz"):
                pass


async def test_track_false_starts_no_server(tmp_path: Path) -> None:
    async with Daemon(settings(tmp_path), watch=False, schedule=False, handle_signals=False, configure_logs=False) as d:
        assert d.tracking is not None
    async with Daemon(
        Settings(
            config_dir=tmp_path / "config",
            var_dir=tmp_path / "var2",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
        ),
        watch=False,
        schedule=False,
        track=False,
        handle_signals=False,
        configure_logs=False,
    ) as d:
        assert d.tracking is None
