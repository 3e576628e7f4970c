"""Shared fixtures: a real Redis for the whole session, and a unique key prefix per test.

`redis_url` is `LOA_REDIS_URL` when set; otherwise a `redis-server` found on PATH is started on
a free port in a temporary folder (and stopped by its own pid at the end). Without either the
Redis tests are skipped, unless `LOA_REQUIRE_REDIS=1` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from bots.supervisor import free_port


def _unavailable(reason: str) -> None:
    if os.environ.get("LOA_REQUIRE_REDIS") == "1":
        pytest.fail(f"Redis is required (LOA_REQUIRE_REDIS=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("LOA_REDIS_URL")
    if url:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError as error:
            _unavailable(f"LOA_REDIS_URL={url} does not answer: {error}")
        yield url
        return
    server = shutil.which("redis-server")
    if server is None:
        _unavailable("no LOA_REDIS_URL and no redis-server on PATH")
        return
    folder: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _unavailable(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix` (SCAN, never FLUSHDB); returns how many."""
    client = redis.Redis.from_url(url)
    pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted after the test."""
    prefix = f"loatest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()
