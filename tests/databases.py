"""One empty records database per test: a new SQLite file, and — when asyncpg is installed and
127.0.0.1:5432 answers — a new PostgreSQL database created for the test and dropped after
(nothing else is ever dropped). Conftests import the fixtures to run their suites on both."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bots.records.db import Database, default_url, open_database
from tests.required import STRICT, missing

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _postgres_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None if they can."""
    if importlib.util.find_spec("asyncpg") is None:
        return "asyncpg is not installed (PostgreSQL records tests need it)"
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return "no PostgreSQL on 127.0.0.1:5432"
    return None


POSTGRES_UNAVAILABLE = _postgres_reason()
# PostgreSQL joins the parametrisation only when it can run; tests/records'
# PostgreSQL joins the parametrisation when it can run (always in CI, where its absence fails);
# elsewhere test_postgres_is_covered reports the reason once instead of one skip per test.
BACKENDS = ["sqlite", "postgresql"] if STRICT or not POSTGRES_UNAVAILABLE else ["sqlite"]


@contextlib.asynccontextmanager
async def fresh_postgres(prefix: str = "loa_test") -> AsyncIterator[str]:
    """A PostgreSQL database created for the caller (a unique name) and dropped after it;
    nothing else is ever dropped. Skipped here, failed in CI, without a server."""
    if POSTGRES_UNAVAILABLE:
        missing(POSTGRES_UNAVAILABLE)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database's URL: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield default_url(tmp_path / "data")
        return
    async with fresh_postgres() as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    yield database
    await database.close()
