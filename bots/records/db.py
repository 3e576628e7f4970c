"""The records database: async engine, sessions, and schema migrations at start-up.

`await open_database(url)` is what the application calls: it brings the schema to the newest
Alembic revision (creating it on an empty database) and returns the engine and session makers.

SQLite (the default, `sqlite+aiosqlite:///<data_dir>/loa.sqlite3`) runs in WAL mode with a busy
timeout and foreign keys on; every transaction starts with `BEGIN IMMEDIATE`, so two writers
(even in two processes) queue on the busy timeout instead of failing half-way with "database
is locked". Read-only work uses `Database.reads`, whose transactions start with a plain
`BEGIN` and never wait for a writer. PostgreSQL URLs (`LOA_DATABASE_URL`) get none of this:
its own MVCC does the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS = Path(__file__).with_name("migrations")
READ_ONLY = "loa_read_only"  # execution option: start SQLite transactions with a plain BEGIN


def default_url(data_dir: str | Path) -> str:
    return f"sqlite+aiosqlite:///{(Path(data_dir) / 'loa.sqlite3').resolve()}"


def make_engine(url: str, *, busy_timeout: float = 30.0, echo: bool = False) -> AsyncEngine:
    """An async engine; for SQLite also creates the file's folder and installs the pragmas
    and `BEGIN IMMEDIATE`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No pre-ping: it cost a round trip per checkout (a tenth of a turn's CPU in the soak).
        # A connection the server dropped fails its turn once; SQLAlchemy then invalidates the
        # whole pool, and the turn is retried from the inbox (docs/pipeline.md).
        # 20 kept open: the pipeline runs up to 12 turns at once plus the senders' window reads;
        # with the default 5, every burst opened and closed overflow connections (a connect
        # is ~3 ms of CPU here).
        return create_async_engine(
            url, echo=echo, pool_recycle=1800, pool_size=20, max_overflow=10
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": busy_timeout})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver: the "begin" hook below emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Deleted personal data is overwritten with zeros, not left in free pages of the file
        # (docs/van-hanh.md: retention purge and "xóa dữ liệu của tôi").
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration without an .ini file: the scripts ship inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(target: str | AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` (creating it on an empty database). Running it again is
    a no-op; two processes starting together are serialised by the database."""
    engine = make_engine(target) if isinstance(target, str) else target
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_sync, revision)
    finally:
        if isinstance(target, str):
            await engine.dispose()


# Any constant: the key of the PostgreSQL advisory lock that serialises migrations.
_MIGRATION_LOCK = 0x10A0_0001


def _upgrade_sync(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes starting on an empty database would both CREATE TABLE alembic_version
        # (PostgreSQL lets both transactions start; one then fails on the catalogue's unique
        # index). The lock lasts until this transaction ends: the second process then finds
        # the schema at head and does nothing. SQLite's BEGIN IMMEDIATE already serialises.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]  # for writes (BEGIN IMMEDIATE on SQLite)
    reads: async_sessionmaker[AsyncSession]  # for read-only work

    async def close(self) -> None:
        await self.engine.dispose()


def session_makers(
    engine: AsyncEngine,
) -> tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]]:
    writes = async_sessionmaker(engine, expire_on_commit=False)
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        # PostgreSQL's default READ COMMITTED gives each statement its own snapshot anyway;
        # without a transaction a read is one round trip instead of BEGIN, SELECT, ROLLBACK.
        options["isolation_level"] = "AUTOCOMMIT"
    reads = async_sessionmaker(engine.execution_options(**options), expire_on_commit=False)
    return writes, reads


async def open_database(
    url: str | None = None, *, data_dir: str | Path = "./var", migrate: bool = True
) -> Database:
    """The records database at `url` (default: SQLite under `data_dir`), migrated to head."""
    engine = make_engine(url or default_url(data_dir))
    try:
        if migrate:
            await upgrade(engine)
    except BaseException:
        await engine.dispose()
        raise
    writes, reads = session_makers(engine)
    return Database(engine, writes, reads)


__all__ = [
    "Database",
    "alembic_config",
    "current_revision",
    "default_url",
    "make_engine",
    "open_database",
    "session_makers",
    "upgrade",
]
