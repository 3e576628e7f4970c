"""Fixtures for the Zalo token keeper: a migrated records database (SQLite in tmp_path and, when
asyncpg and 127.0.0.1:5432 are there, a PostgreSQL database created for the test and dropped
after; nothing else is ever dropped), the fake Zalo OAuth server and an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from bots.records.db import Database
from bots.zalo_tokens import ZaloTokenKeeper
from tests.databases import (  # fixtures this folder uses
    database_url,  # noqa: F401
    db,  # noqa: F401
)
from tests.fakes.zalo_api import FakeZaloApi
from tests.zalo_tokens.support import DISTRICT, OA


@pytest.fixture
async def zalo() -> AsyncIterator[FakeZaloApi]:
    async with FakeZaloApi() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


KeeperFactory = Callable[..., ZaloTokenKeeper]  # (database=None, **keeper options)


@pytest.fixture
def make_keeper(
    db: Database,  # noqa: F811 (the shared fixture)
    http: aiohttp.ClientSession,
    zalo: FakeZaloApi,
) -> KeeperFactory:
    """Keepers on the test's database and fake server; `database=` gives another engine (as
    another process would have)."""

    def make(database: Database | None = None, **options: Any) -> ZaloTokenKeeper:
        options.setdefault("districts", {OA: DISTRICT})
        options.setdefault("lease", timedelta(seconds=5))
        return ZaloTokenKeeper(
            database or db, http, zalo.oauth_url, zalo.app_id, zalo.app_secret, **options
        )

    return make
