"""The schema: created by Alembic on an empty database, idempotent, in step with the models."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select

from bots.records.db import (
    Database,
    alembic_config,
    current_revision,
    default_url,
    make_engine,
    open_database,
    upgrade,
)
from bots.records.models import Base, Organisation
from tests.required import missing

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
TABLES = {
    "organisations",
    "participants",
    "channel_identities",
    "submissions",
    "evidence_items",
    "referral_credits",
    "tags",
    "organiser_notifications",
    "processed_inbound",
    "audit_log",
}


async def test_first_start_creates_the_schema_in_an_empty_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"  # does not exist yet
    db = await open_database(data_dir=data_dir)
    try:
        assert await current_revision(db.engine) == HEAD
        async with db.engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert tables >= TABLES
    finally:
        await db.close()
    con = sqlite3.connect(data_dir / "loa.sqlite3")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        con.close()


async def test_migrations_and_models_agree(db: Database) -> None:
    async with db.engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    assert diff == []


async def test_upgrade_again_is_a_no_op_and_keeps_data(database_url: str) -> None:
    await upgrade(database_url)
    now = datetime(2023, 8, 7, tzinfo=UTC)
    db = await open_database(database_url)  # upgrades a second time
    try:
        async with db.sessions() as session, session.begin():
            session.add(
                Organisation(
                    slug="tan-phu", name="Quận Đoàn Tân Phú", created_at=now, updated_at=now
                )
            )
        await upgrade(db.engine)
        assert await current_revision(db.engine) == HEAD
        async with db.reads() as session:
            assert await session.scalar(select(func.count()).select_from(Organisation)) == 1
    finally:
        await db.close()


async def test_two_processes_starting_together_both_find_the_schema(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    engines = [make_engine(url), make_engine(url)]
    try:
        await asyncio.gather(*(upgrade(engine) for engine in engines))
        for engine in engines:
            assert await current_revision(engine) == HEAD
    finally:
        for engine in engines:
            await engine.dispose()


def test_postgres_is_covered(postgres_unavailable: str | None) -> None:
    """Reports, once, why the records tests did not also run on PostgreSQL (they do, through
    the `database_url` fixture, once a driver is installed and 127.0.0.1:5432 answers)."""
    if postgres_unavailable:
        missing(postgres_unavailable)


async def test_sqlite_writes_lock_at_begin_and_reads_do_not(tmp_path: Path) -> None:
    db = await open_database(data_dir=tmp_path)
    other = sqlite3.connect(tmp_path / "loa.sqlite3", timeout=0, isolation_level=None)
    try:
        async with db.sessions() as session, session.begin():
            await session.execute(select(Organisation.id))  # a read, yet the lock is taken
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once committed
        async with db.reads() as session, session.begin():
            await session.execute(select(Organisation.id))
            assert other.in_transaction  # a read-only session does not wait for the writer
        other.execute("ROLLBACK")
    finally:
        other.close()
        await db.close()
