"""`loa serve` killed with SIGKILL mid-conversation: after a restart nothing acknowledged is lost
and nothing is answered twice.

Twenty browser users talk to the echo flow at once, each sending its messages one at a time
the way bots/web/chat.js does (a client id per message, kept across retries of that message).
Half-way through, the server process is killed without warning, then started again on the same
data (SQLite store, or Redis). The users carry on, retrying what was in flight. Every message the
server acknowledged (202) must be answered exactly once, in each user's order. (Conversations
the killed process held stay locked until their lease ends: LOA_LOCK_TTL, 2 s here.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.supervisor import free_port
from tests.bots.conftest import ECHO_YAML

REPO = Path(__file__).resolve().parents[2]
USERS = 20
MESSAGES = 12  # per user, after the START
KILL_AFTER = USERS * MESSAGES // 2  # acknowledged messages before the kill


class Server:
    def __init__(self, env: dict[str, str], config: Path, port: int, log: Path) -> None:
        self.env, self.config, self.port, self.log = env, config, port, log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bots.cli", "serve", "--port", str(self.port),
                 "--config", str(self.config)],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "loa serve did not start"
                await asyncio.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _user(
    http: aiohttp.ClientSession, server: Server, n: int, acked: list[str], up: asyncio.Event
) -> None:
    user = f"user-{n:02d}-" + "x" * 8
    bodies: list[dict[str, Any]] = [{"start": True, "id": f"{user}-start"}]
    bodies += [{"text": f"u{n}-m{k}", "id": f"{user}-{k}"} for k in range(MESSAGES)]
    for body in bodies:
        while True:  # the page retries a message until the server takes it
            await up.wait()
            try:
                async with http.post(
                    f"{server.url}/chat/send",
                    json={"user": user, "district": "thu", **body},
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as response:
                    if response.status == 202:
                        if "text" in body:
                            acked.append(body["text"])
                        break
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)


async def _transcript(http: aiohttp.ClientSession, server: Server, n: int) -> list[str]:
    """Everything the bot answered this user (nothing acknowledged: read from the start)."""
    user = f"user-{n:02d}-" + "x" * 8
    async with http.get(
        f"{server.url}/chat/messages", params={"user": user, "district": "thu", "after": "0"}
    ) as response:
        assert response.status == 200
        data = await response.json()
    return [str(m.get("text", "")) for m in data["messages"]]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_sigkill_mid_conversation_loses_nothing_and_answers_nothing_twice(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    config = tmp_path / "flows.yaml"
    config.write_text(ECHO_YAML, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env["LOA_DATA_DIR"] = str(tmp_path / "var")
    # A conversation the killed process was handling stays locked until its lease ends; a short
    # lease lets the restarted process (its periodic sweep, or the person's next message) take
    # it over within the test's patience.
    env["LOA_LOCK_TTL"] = "2"
    if backend == "redis":
        env["LOA_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["LOA_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
    server = Server(env, config, free_port(), tmp_path / "serve.log")
    acked: list[str] = []
    up = asyncio.Event()
    try:
        await server.start()
        up.set()
        async with aiohttp.ClientSession() as http:
            users = [asyncio.ensure_future(_user(http, server, n, acked, up)) for n in range(USERS)]
            while len(acked) < KILL_AFTER:
                await asyncio.sleep(0.005)
            server.kill()  # mid-conversation: requests and workers in flight
            up.clear()
            killed_at = len(acked)
            await server.start()
            up.set()
            await asyncio.gather(*users)
            assert killed_at < USERS * MESSAGES  # the kill really was mid-way
            expected = {f"u{n}-m{k}" for n in range(USERS) for k in range(MESSAGES)}
            assert set(acked) == expected and len(acked) == len(expected)

            deadline = time.monotonic() + 45
            while True:
                transcripts = [await _transcript(http, server, n) for n in range(USERS)]
                answered = [
                    [t.removeprefix("Đã nhận: ") for t in lines if t.startswith("Đã nhận: ")]
                    for lines in transcripts
                ]
                if sum(map(len, answered)) >= len(expected) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        for n, got in enumerate(answered):
            # Every acknowledged message answered, exactly once, in the user's order.
            assert got == [f"u{n}-m{k}" for k in range(MESSAGES)], (n, got)
    finally:
        server.stop()
