"""Reports fixtures: a migrated records database on SQLite (in tmp_path) and, when
127.0.0.1:5432 answers, on a PostgreSQL database created for the test and dropped after (only
that one); and a small deployment whose figures the tests work out by hand."""

from __future__ import annotations

import importlib.util
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bots.records.db import Database, default_url, open_database
from flows.compiler import CompiledBundle, compile_bundle
from flows.schema import Bundle

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
KEY = b"reports-test-key-0123456789abcdef"


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
    name = f"loa_reports_{uuid.uuid4().hex[:12]}"
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


# A province with two districts (one declaring its own member count and a percent quota) and a
# Sốp Cộp-like district with two communes. Quotas: p1 50% of 4 = 2; p2 50% of 3 = 1.5 → 2;
# p3 40% of 5 = 2; t1 100% of 2 = 2; quan-a 14 members, quota 8; quan-b declares 10 and 30% → 3.
DEPLOYMENT = """
organisations:
  tinh:
    name: Tỉnh đoàn Mẫu
    children:
      quan-a:
        name: Quận Đoàn A
        channels: {webchat: {}}
        children:
          p1: {name: Đoàn phường 1, area: Khối phường, members: 4, quota: 50%}
          p2: {name: Đoàn phường 2, area: Khối phường, members: 3, quota: 50%}
          p3: {name: Đoàn phường 3, area: Khối phường, members: 5, quota: 40%}
          t1: {name: Đoàn trường 1, area: Khối trường học, members: 2, quota: 100%}
      quan-b:
        name: Quận Đoàn B
        members: 10
        quota: 30%
        channels: {webchat: {}}
        children:
          b1: {name: Đoàn phường B1, area: Khối phường, members: 6, quota: 3}
  sc:
    name: Huyện đoàn SC
    channels: {webchat: {}}
    children:
      x1: {name: Đoàn xã 1, area: Khối xã}
      x2: {name: Đoàn xã 2, area: Khối xã}

campaigns:
  thu_thach:
    title: Thử thách mẫu
    waves:
      - {name: Đợt 1, from: 2023-08-07, to: 2023-09-14}
      - {name: Đợt 2, from: 2023-09-15, to: 2023-10-15}
  vneid:
    title: Hướng dẫn VNeID mẫu
    waves:
      - {name: Đợt 1, from: 2023-04-21, to: 2023-05-12}
      - {name: Đợt 2, from: 2023-05-13, to: 2023-06-20}

flows:
  dang_ky:
    title: Đăng ký
    steps:
      - ask: Bạn đồng ý cho lưu thông tin chứ?
        expect: yes_no
        save: dong_y
      - ask: Họ tên?
        save: ho_ten
      - ask: Đơn vị?
        expect: unit
        save: don_vi
      - end: Cảm ơn {ho_ten}.
"""


@pytest.fixture(scope="session")
def compiled() -> CompiledBundle:
    return compile_bundle(Bundle.model_validate(yaml.safe_load(DEPLOYMENT)), Path("."))
