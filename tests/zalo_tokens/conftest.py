"""Fixtures for the Zalo token keeper: a migrated records database (SQLite in tmp_path and, when
asyncpg and 127.0.0.1:5432 are there, a PostgreSQL database created for the test and dropped
after; nothing else is ever dropped), the fake Zalo OAuth server and an HTTP session."""

from __future__ import annotations

import importlib.util
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bots.records.db import Database, default_url, open_database
from bots.zalo_tokens import ZaloTokenKeeper
from tests.fakes.zalo_api import FakeZaloApi
from tests.zalo_tokens.support import DISTRICT, OA

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _postgres_reason() -> str | None:
    if importlib.util.find_spec("asyncpg") is None:
        return "asyncpg is not installed"
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return "no PostgreSQL on 127.0.0.1:5432"
    return None


POSTGRES_UNAVAILABLE = _postgres_reason()
BACKENDS = ["sqlite"] if POSTGRES_UNAVAILABLE else ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield default_url(tmp_path / "data")
        return
    name = f"loa_test_zt_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    yield database
    await database.close()


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
def make_keeper(db: Database, http: aiohttp.ClientSession, zalo: FakeZaloApi) -> KeeperFactory:
    """Keepers on the test's database and fake server; `database=` gives another engine (as
    another process would have)."""

    def make(database: Database | None = None, **options: Any) -> ZaloTokenKeeper:
        options.setdefault("districts", {OA: DISTRICT})
        options.setdefault("lease", timedelta(seconds=5))
        return ZaloTokenKeeper(
            database or db, http, zalo.oauth_url, zalo.app_id, zalo.app_secret, **options
        )

    return make
