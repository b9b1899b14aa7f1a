"""A report built once from the seeded SQLite database, for the renderer tests."""

from __future__ import annotations

import asyncio

import pytest

from reporting.seed import CAMPAIGN, COSTS, NAME, T0, WINDOW, seed
from topslot.reporting.data import ReportQuery, build_report
from topslot.reporting.model import Report
from topslot.store.db import open_engine, upgrade


@pytest.fixture(scope="module")
def seeded_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    path = tmp_path_factory.mktemp("seeded") / "topslot.db"

    async def build() -> Report:
        engine = open_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade(engine)
            await seed(engine)
            query = ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=COSTS)
            return await build_report(engine, query, T0, name=NAME, charts=True)
        finally:
            await engine.dispose()

    return asyncio.run(build())
