"""The disk guard with an injected `disk_usage`: levels, refusals, organiser notices."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from bots.ops.diskguard import (
    FULL_IMAGE,
    MB,
    DiskGuard,
    DiskLevel,
    DiskThresholds,
    Usage,
)
from bots.records.models import OrganiserNotification
from bots.runtime import Runtime
from bots.server import build_app
from bots.settings import Settings, from_env
from flows.vocab import Attachment, Channel, Inbound, InboundKind

from .browser import Browser, metric, png
from .conftest import FLOWS, file_hashes

GB = 1024 * MB


class FakeDisk:
    """`shutil.disk_usage` of a disk whose free space the test sets."""

    def __init__(self, total: int = 100 * GB, free: int = 50 * GB) -> None:
        self.total = total
        self.free = free
        self.calls = 0

    def __call__(self, path: Path) -> Usage:
        self.calls += 1
        return Usage(self.total, self.total - self.free, self.free)


def test_levels_defaults_and_settings() -> None:
    auto = DiskThresholds()
    # A large disk: 2 GB and 500 MB.
    assert auto.limits(500 * GB) == (2048 * MB, 500 * MB)
    assert auto.level(3 * GB, 500 * GB) is DiskLevel.OK
    assert auto.level(2 * GB - 1, 500 * GB) is DiskLevel.LOW
    assert auto.level(500 * MB - 1, 500 * GB) is DiskLevel.FULL
    # A 10 GB disk: 5 % and 2 % are less (512 MB, ~205 MB).
    warn, minimum = auto.limits(10 * GB)
    assert (warn, minimum) == (int(10 * GB * 0.05), int(10 * GB * 0.02))
    assert auto.level(300 * MB, 10 * GB) is DiskLevel.LOW
    settings = from_env({"LOA_DISK_WARN_MB": "8000", "LOA_DISK_MIN_MB": "0",
                         "LOA_DATA_DIR": "/tmp/loa-ops-settings"}, create_dirs=False)
    explicit = DiskThresholds.from_settings(settings)
    assert explicit.limits(10 * GB) == (8000 * MB, 0)  # explicit values are taken as they are
    assert explicit.level(1, 10 * GB) is DiskLevel.LOW  # 0 MB: never refuse


def test_readings_are_reused_briefly() -> None:
    disk = FakeDisk()
    now = [0.0]
    guard = DiskGuard(Path("/"), usage=disk, max_age=2.0, clock=lambda: now[0])
    guard.status()
    guard.status()
    assert disk.calls == 1
    now[0] = 2.5
    guard.status()
    assert disk.calls == 2


@pytest.fixture
def disk() -> FakeDisk:
    return FakeDisk()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return from_env({"LOA_CONFIG": str(FLOWS), "LOA_DATA_DIR": str(tmp_path / "var")})


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    settings: Settings,
    disk: FakeDisk,
) -> AsyncIterator[TestClient[Any, Any]]:
    runtime = Runtime(settings, sweep_every=0)
    runtime.ops.disk.usage = disk
    runtime.ops.disk.max_age = 0.0  # every check reads the (fake) disk
    yield await aiohttp_client(build_app(runtime))


def _runtime(client: TestClient[Any, Any]) -> Runtime:
    from bots.server import RUNTIME

    return client.app[RUNTIME]


async def test_uploads_are_refused_below_the_minimum_and_nothing_stored_is_touched(
    client: TestClient[Any, Any], settings: Settings, disk: FakeDisk
) -> None:
    chat = Browser(client)
    status, body = await chat.upload(png("red"))
    assert status == 202, body
    stored = file_hashes(settings.files_dir)
    assert len(stored) == 1

    disk.free = 400 * MB  # below the 500 MB minimum of a 100 GB disk
    status, body = await chat.upload(png("blue"))
    assert (status, body) == (400, {"error": FULL_IMAGE})
    assert body["error"] == "Hệ thống đang tạm đầy bộ nhớ, bạn gửi lại ảnh sau ít phút nhé."
    assert file_hashes(settings.files_dir) == stored  # nothing new, nothing changed
    # Text keeps working: the conversation goes on.
    assert "Bạn muốn làm gì" in await chat.say("menu")

    disk.free = 10 * GB
    status, body = await chat.upload(png("blue"))
    assert status == 202, body
    assert len(file_hashes(settings.files_dir)) == 2


async def test_evidence_downloads_are_refused_before_anything_is_fetched(
    client: TestClient[Any, Any], disk: FakeDisk
) -> None:
    runtime = _runtime(client)
    fetched: list[str] = []

    async def fetch(url: str, *args: Any, **kwargs: Any) -> bytes:
        fetched.append(url)
        raise AssertionError("must not download while the disk is full")

    assert runtime._capture is not None
    runtime._capture.fetcher.fetch = fetch  # type: ignore[method-assign]
    disk.free = 100 * MB
    key_user = "refused-user-00000000000"
    inbound = Inbound(
        district="tan-phu",
        channel=Channel.WEBCHAT,
        user_id=key_user,
        kind=InboundKind.IMAGE,
        message_id="img-1",
        timestamp=datetime.now(UTC),
        attachments=(Attachment(mime="image/jpeg", url="https://cdn.example.invalid/a.jpg"),),
    )
    assert await runtime.pipeline.process(inbound)
    key = runtime.webchat.key(key_user, "tan-phu")
    from bots.pipeline import decode_outbound

    replies = [decode_outbound(item.payload) for item in await runtime.store.outbox_read(key)]
    assert [m.text for m in replies] == [FULL_IMAGE]
    assert fetched == []
    body = await (await client.get("/metrics")).text()
    assert metric(body, "loa_media_refused_total", reason="disk_full") == 1.0


async def test_a_low_disk_notifies_organisers_on_each_change(
    client: TestClient[Any, Any], settings: Settings, disk: FakeDisk
) -> None:
    guard = _runtime(client).ops.disk
    assert (await guard.poll()).level is DiskLevel.OK
    disk.free = 1 * GB
    assert (await guard.poll()).level is DiskLevel.LOW
    assert (await guard.poll()).level is DiskLevel.LOW  # no second notice for the same level
    disk.free = 300 * MB
    assert (await guard.poll()).level is DiskLevel.FULL
    disk.free = 30 * GB
    assert (await guard.poll()).level is DiskLevel.OK
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(OrganiserNotification.district, OrganiserNotification.text).order_by(
                        OrganiserNotification.id
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [district for district, _ in rows] == ["tan-phu"] * 3
    assert "sắp đầy: còn 1024 MB" in rows[0][1]
    assert "gần đầy: còn 300 MB" in rows[1][1] and "tạm từ chối ảnh" in rows[1][1]
    assert "đủ chỗ trở lại" in rows[2][1]
    body = await (await client.get("/metrics")).text()
    assert metric(body, "loa_disk_level") == 0.0
    assert metric(body, "loa_disk_free_bytes") == 30 * GB
