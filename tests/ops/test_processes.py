"""`loa serve --processes N` (bots/supervisor.py): N processes on one port, sharing Redis and
PostgreSQL; a killed process is started again; SIGTERM stops them all; refused without Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from bots.supervisor import free_port

from .conftest import REPO_ROOT
from .test_two_processes import ECHO_YAML, _wait_ready

USERS = 6


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    flows = tmp_path / "flows.yaml"
    flows.write_text(ECHO_YAML, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(
        LOA_CONFIG=str(flows), LOA_DATA_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1", **extra
    )
    return env


def _serve(env: dict[str, str], args: list[str], log: Path) -> subprocess.Popen[str]:
    handle: IO[str] = log.open("w", encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "bots.cli", "serve", *args],
        cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True,
    )


def test_several_processes_need_redis(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bots.cli", "serve", "--processes", "2", "--port", "0"],
        cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "cần Redis" in done.stderr and "LOA_REDIS_URL" in done.stderr


@pytest.fixture
def supervised(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    port = free_port()
    log = tmp_path / "serve.log"
    env = _env(
        tmp_path, LOA_DATABASE_URL=postgres_url, LOA_REDIS_URL=redis_url,
        LOA_REDIS_PREFIX=redis_prefix, LOA_CITIZEN_KEY="one-key-for-every-process",
    )
    process = _serve(env, ["--processes", "2", "--port", str(port)], log)
    try:
        _wait_ready(process, log, time.monotonic() + 90)
        yield process, f"http://127.0.0.1:{port}", log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _pids(url: str, tries: int = 40) -> dict[int, int]:
    """Which process answered, over `tries` fresh connections: {pid: process index}."""
    seen: dict[int, int] = {}
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection (and port) each time
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(tries):
            try:
                async with http.get(f"{url}/healthz") as response:
                    body = await response.json()
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)  # a process restarting
                continue
            assert body["ok"] is True and body["store"] == "redis"
            seen[int(body["pid"])] = int(body["process"])
    return seen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


async def test_processes_share_the_port_restart_and_stop_together(
    supervised: tuple[subprocess.Popen[str], str, Path],
) -> None:
    supervisor, url, log = supervised
    deadline = time.monotonic() + 60
    seen: dict[int, int] = {}
    while len(set(seen.values())) < 2 and time.monotonic() < deadline:
        seen.update(await _pids(url))
    assert sorted(set(seen.values())) == [0, 1], seen  # both processes answer on one port

    # Conversations through whichever process the kernel picks are answered once, in order.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async def converse(n: int) -> list[str]:
            user = f"nguoi{n:02d}-{'x' * 16}"  # browser ids are long random tokens
            body = {"user": user, "district": "thu", "id": f"{user}-0", "start": True}
            async with http.post(f"{url}/chat/send", json=body) as response:
                assert response.status == 202
            for k in (1, 2):
                body = {"user": user, "district": "thu", "id": f"{user}-{k}", "text": f"tin {k}"}
                async with http.post(f"{url}/chat/send", json=body) as response:
                    assert response.status == 202
            texts: list[str] = []
            cursor = 0
            stop = time.monotonic() + 60
            while len(texts) < 5 and time.monotonic() < stop:
                params = {"user": user, "district": "thu", "after": str(cursor), "wait": "2"}
                async with http.get(f"{url}/chat/messages", params=params) as response:
                    data = await response.json()
                texts += [m["text"] for m in data["messages"]]
                cursor = data["cursor"]
            return texts

        transcripts = await asyncio.gather(*(converse(n) for n in range(USERS)))
    wanted = ["Bạn gửi gì?", "Đã nhận: tin 1", "Bạn gửi gì?", "Đã nhận: tin 2", "Bạn gửi gì?"]
    assert transcripts == [wanted] * USERS

    # A process killed outright is started again; the other keeps serving meanwhile.
    victim = next(pid for pid, index in seen.items() if index == 1)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    fresh: dict[int, int] = {}
    while time.monotonic() < deadline:
        fresh = await _pids(url, tries=20)
        if any(index == 1 and pid != victim for pid, index in fresh.items()):
            break
        await asyncio.sleep(0.5)
    assert victim not in fresh
    assert any(index == 1 and pid != victim for pid, index in fresh.items()), fresh
    assert "process 1 stopped" in log.read_text(encoding="utf-8")

    # SIGTERM to the supervisor stops every process, then the supervisor, cleanly.
    children = set(fresh) | {pid for pid in seen if pid != victim}
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0
    assert not any(_alive(pid) for pid in children)
    assert "Loa đã dừng." in log.read_text(encoding="utf-8")
