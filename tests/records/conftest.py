"""Records fixtures: a migrated database per test, on SQLite in tmp_path and, when a driver is
installed and 127.0.0.1:5432 answers, on a PostgreSQL database created for the test (and
dropped after; nothing else is ever dropped)."""

from __future__ import annotations

import pytest

from tests.databases import (  # fixtures this folder uses
    POSTGRES_UNAVAILABLE,
    database_url,  # noqa: F401
    db,  # noqa: F401
)


@pytest.fixture(scope="session")
def postgres_unavailable() -> str | None:
    return POSTGRES_UNAVAILABLE
