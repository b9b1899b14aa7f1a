"""A scripted SMTP server per test (see scripted_smtp.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .scripted_smtp import ScriptedSmtpServer


@pytest.fixture
async def smtp_server() -> AsyncIterator[ScriptedSmtpServer]:
    async with ScriptedSmtpServer() as server:
        yield server
