"""Two `loa serve` processes on one Redis and one PostgreSQL database, as behind a load
balancer: the same people's messages go to either process, interleaved; nothing is lost,
duplicated or reordered, and the records agree."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from bots.records.models import ChannelIdentity, Participant, ProcessedInbound
from bots.supervisor import free_port

from .browser import metric
from .conftest import REPO_ROOT

ECHO_YAML = """\
organisations:
  thu:
    name: Đơn vị thử
    channels: {webchat: {}}
    menu: nhac_lai
flows:
  nhac_lai:
    title: Nhắc lại
    steps:
      - id: hoi
        ask: Bạn gửi gì?
        expect: text
        save: x
      - say: "Đã nhận: {x}"
        goto: hoi
"""

USERS = 8
MESSAGES = 12


class Server:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[str]:
    handle: IO[str] = log.open("w", encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "bots.cli", "serve", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True,
    )


def _wait_ready(process: subprocess.Popen[str], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if "Loa đang chạy tại" in log.read_text(encoding="utf-8", errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail("loa serve did not start:\n" + log.read_text(encoding="utf-8", errors="replace"))


@pytest.fixture
def servers(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> Iterator[list[Server]]:
    flows = tmp_path / "echo" / "flows.yaml"
    flows.parent.mkdir()
    flows.write_text(ECHO_YAML, encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    base.update(
        LOA_CONFIG=str(flows),
        LOA_DATABASE_URL=postgres_url,
        LOA_REDIS_URL=redis_url,
        LOA_REDIS_PREFIX=redis_prefix,
        LOA_CITIZEN_KEY="one-key-for-every-process-of-the-test",
        PYTHONUNBUFFERED="1",
    )
    started: list[Server] = []
    try:
        # Both start at once: the schema migration and the organisation sync must cope.
        for n in (1, 2):
            port = free_port()
            log = tmp_path / f"serve{n}.log"
            env = {**base, "LOA_DATA_DIR": str(tmp_path / f"var{n}")}
            started.append(Server(_start(env, port, log), f"http://127.0.0.1:{port}", log))
        deadline = time.monotonic() + 90
        for server in started:
            _wait_ready(server.process, server.log, deadline)
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGINT)
        for server in started:
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


async def _send(
    http: aiohttp.ClientSession, server: Server, user: str, message_id: str, **fields: Any
) -> dict[str, Any]:
    body = {"user": user, "district": "thu", "id": message_id, **fields}
    async with http.post(f"{server.url}/chat/send", json=body) as response:
        assert response.status == 202, await response.text()
        data: dict[str, Any] = await response.json()
        return data


async def _transcript(
    http: aiohttp.ClientSession, servers: list[Server], user: str, expected: int
) -> list[str]:
    """Read the user's replies through both processes in turn (long-polling), until
    `expected` have come or nothing more comes for a while."""
    texts: list[str] = []
    cursor = 0
    turn = 0
    deadline = time.monotonic() + 60
    while len(texts) < expected and time.monotonic() < deadline:
        server = servers[turn % 2]
        turn += 1
        params = {"user": user, "district": "thu", "after": str(cursor), "wait": "2"}
        async with http.get(f"{server.url}/chat/messages", params=params) as response:
            assert response.status == 200
            data = await response.json()
        for message in data["messages"]:
            assert message["seq"] > cursor
        texts.extend(m["text"] for m in data["messages"])
        cursor = data["cursor"]
    # One more look: nothing arrives after the last expected reply (no duplicate answer).
    await asyncio.sleep(1.0)
    params = {"user": user, "district": "thu", "after": str(cursor), "wait": "0"}
    async with http.get(f"{servers[turn % 2].url}/chat/messages", params=params) as response:
        texts.extend(m["text"] for m in (await response.json())["messages"])
    return texts


async def test_two_processes_share_one_redis_and_one_postgres(
    servers: list[Server], postgres_url: str
) -> None:
    rng = random.Random(20260509)
    users = [f"user{n:02d}-{'x' * 16}" for n in range(USERS)]
    duplicates = 0

    async def converse(http: aiohttp.ClientSession, index: int, user: str) -> int:
        """One person: a start, then MESSAGES texts, each to either process; some sent
        twice (the page retried through the other process)."""
        retried = 0
        await _send(http, servers[index % 2], user, f"{user}-start", start=True)
        for k in range(1, MESSAGES + 1):
            server = servers[(index + k) % 2]
            message_id = f"{user}-m{k:02d}"
            reply = await _send(http, server, user, message_id, text=f"tin {k} của {index}")
            assert reply["duplicate"] is False
            if rng.random() < 0.25:
                again = await _send(http, servers[(index + k + 1) % 2], user, message_id,
                                    text=f"tin {k} của {index}")
                assert again["duplicate"] is True
                retried += 1
            await asyncio.sleep(rng.random() * 0.02)
        return retried

    async with aiohttp.ClientSession() as http:
        retried = await asyncio.gather(*(converse(http, i, u) for i, u in enumerate(users)))
        duplicates = sum(retried)
        expected = 1 + 2 * MESSAGES
        transcripts = await asyncio.gather(
            *(_transcript(http, servers, user, expected) for user in users)
        )
        scraped = []
        for server in servers:
            async with http.get(f"{server.url}/metrics") as response:
                scraped.append(await response.text())

    for index, texts in enumerate(transcripts):
        wanted = ["Bạn gửi gì?"]
        for k in range(1, MESSAGES + 1):
            wanted += [f"Đã nhận: tin {k} của {index}", "Bạn gửi gì?"]
        assert texts == wanted, f"user {index}"

    # Both processes took part, and between them counted every message once.
    accepted = [metric(body, "loa_messages_in_total", channel="webchat") or 0 for body in scraped]
    assert all(count > 0 for count in accepted)
    assert sum(accepted) == USERS * (1 + MESSAGES)
    assert sum(metric(b, "loa_messages_duplicate_total", channel="webchat") or 0
               for b in scraped) == duplicates
    assert sum(metric(b, "loa_messages_processed_total", channel="webchat") or 0
               for b in scraped) == USERS * (1 + MESSAGES)

    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            identities = (await connection.execute(
                select(ChannelIdentity.user_id, func.count()).group_by(ChannelIdentity.user_id)
            )).all()
            participants = await connection.scalar(select(func.count()).select_from(Participant))
            profiles = dict((await connection.execute(
                select(ChannelIdentity.user_id, Participant.profile).join(
                    Participant, Participant.id == ChannelIdentity.participant_id)
            )).all())
            processed = (await connection.execute(
                select(ProcessedInbound.conversation, func.count()).group_by(
                    ProcessedInbound.conversation)
            )).all()
    finally:
        await engine.dispose()
    assert sorted(identities) == [(user, 1) for user in sorted(users)]  # one person each
    assert participants == USERS
    for index, user in enumerate(users):
        assert profiles[user] == {"x": f"tin {MESSAGES} của {index}"}  # the last answer wins
    # Every text wrote its records exactly once (the start writes none).
    assert sorted(count for _, count in processed) == [MESSAGES] * USERS
