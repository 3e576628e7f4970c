"""PostgreSQL dropped every connection (a restart, a failover): the pool notices on first use,
and the next write succeeds. Without a pre-ping, one operation may fail; nothing written is
lost and nothing needs a restart of Loa."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from bots.records import Records
from bots.records.db import Database
from bots.records.models import ChannelIdentity
from flows.vocab import Channel, ConversationKey
from tests.databases import PG_ADMIN_URL, POSTGRES_UNAVAILABLE
from tests.required import missing

KEY = ConversationKey("tan-phu", Channel.TELEGRAM, "42")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_records_recover_after_postgres_drops_connections(db: Database) -> None:
    if POSTGRES_UNAVAILABLE:
        missing(POSTGRES_UNAVAILABLE)
    records = Records(db.sessions)
    first = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    await records.touch_identity(KEY, first)
    async with db.engine.connect() as connection:  # every pooled connection is used again
        name = (await connection.execute(text("SELECT current_database()"))).scalar()
    killer = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with killer.connect() as connection:
        killed = (
            await connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        ).scalar()
    await killer.dispose()
    assert killed and killed >= 1
    later = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    failures = 0
    for _ in range(3):
        try:
            await records.touch_identity(KEY, later)
            break
        except DBAPIError as error:
            assert error.connection_invalidated
            failures += 1
    assert failures <= 1  # the dropped connection is noticed at most once
    async with db.sessions() as session:
        identity = await session.scalar(select(ChannelIdentity))
    assert identity is not None and identity.last_inbound_at is not None
    assert identity.last_inbound_at.replace(tzinfo=UTC) == later
