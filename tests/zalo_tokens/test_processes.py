"""Real OS processes sharing one database and the fake OAuth server: a refresh race, and a
process killed (SIGKILL) while it holds the refresh lease, before or after Zalo rotated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bots.records.db import Database
from bots.records.models import NotificationKind
from bots.zalo_tokens import ZaloNotAuthorised
from tests.fakes.zalo_api import TOKEN_PATH, FakeZaloApi
from tests.zalo_tokens.conftest import KeeperFactory
from tests.zalo_tokens.support import OA, refresh_calls
from tests.zalo_tokens.test_keeper import grant, newest_access, notifications

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
TIMEOUT = 30.0


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, zalo: FakeZaloApi, mode: str, lease: float) -> Worker:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            url,
            zalo.oauth_url,
            zalo.app_id,
            zalo.app_secret,
            OA,
            mode,
            str(lease),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        if not raw:
            await self.proc.wait()
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode()
            raise AssertionError(f"worker ended ({self.proc.returncode}): {err}")
        return raw.decode().strip()

    async def expect(self, text: str) -> None:
        assert await self.line() == text

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def result(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(await self.line())
        assert await asyncio.wait_for(self.proc.wait(), TIMEOUT) == 0
        return answer

    async def ended(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def workers() -> Any:
    started: list[Worker] = []
    yield started
    for worker in started:  # only the processes this test started
        worker.kill()
        await worker.proc.wait()


async def test_two_processes_refreshing_at_once_call_zalo_once_and_agree(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, database_url: str, workers: list[Worker]
) -> None:
    old = await grant(make_keeper(), zalo, 10 * 60)  # due: less than the hour's margin left
    workers += await asyncio.gather(
        *(Worker.start(database_url, zalo, "normal", lease=5) for _ in range(2))
    )
    await asyncio.gather(*(w.expect("ready") for w in workers))
    zalo.delay_next(1.0, path=TOKEN_PATH)  # the refresh is in flight when the other arrives
    for worker in workers:
        worker.go()
    first, second = await asyncio.gather(*(w.result() for w in workers))
    assert first["token"] == second["token"] == newest_access(zalo) != old
    assert refresh_calls(zalo) == 1
    # both waited for the one refresh: neither went on with the old token
    assert first["seconds"] >= 0.5 and second["seconds"] >= 0.5
    status = await make_keeper().status(OA)
    assert status is not None and status.generation == 2 and status.lease_owner is None


async def test_a_process_killed_holding_the_lease_before_calling_zalo(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, database_url: str, workers: list[Worker]
) -> None:
    keeper = make_keeper(lease=timedelta(seconds=1))
    old = await grant(keeper, zalo, 10 * 60)
    worker = await Worker.start(database_url, zalo, "hang-after-lease", lease=1)
    workers.append(worker)
    await worker.expect("ready")
    worker.go()
    await worker.expect("leased")
    status = await keeper.status(OA)
    assert status is not None and status.lease_owner is not None
    assert f":{worker.proc.pid}:" in status.lease_owner
    worker.proc.send_signal(signal.SIGKILL)
    assert await worker.ended() == -signal.SIGKILL

    loop = asyncio.get_running_loop()
    started = loop.time()
    token = await keeper.access_token(OA)  # waits for the dead holder's lease to expire
    assert loop.time() - started < 3
    assert token == newest_access(zalo) != old
    assert refresh_calls(zalo) == 1  # the dead process never reached Zalo


async def test_a_process_killed_after_zalo_rotated_but_before_saving_needs_a_human(
    make_keeper: KeeperFactory,
    zalo: FakeZaloApi,
    db: Database,
    database_url: str,
    workers: list[Worker],
) -> None:
    """The one window the protocol cannot close: Zalo spent the refresh token and the new pair
    died with the process. Saving right after the HTTP call keeps the window this short."""
    keeper = make_keeper(lease=timedelta(seconds=1))
    await grant(keeper, zalo, 10 * 60)
    stored = await keeper.status(OA)
    worker = await Worker.start(database_url, zalo, "die-after-refresh", lease=1)
    workers.append(worker)
    await worker.expect("ready")
    worker.go()
    await worker.expect("refreshed")
    assert await worker.ended() == -signal.SIGKILL
    assert refresh_calls(zalo) == 1
    after = await keeper.status(OA)
    assert stored is not None and after is not None
    assert after.generation == stored.generation  # the rotated pair was never saved

    with pytest.raises(ZaloNotAuthorised, match="cần cấp quyền lại"):
        await keeper.access_token(OA)
    assert refresh_calls(zalo) == 2  # the next caller tried the spent token, once
    status = await keeper.status(OA)
    assert status is not None and status.needs_reauthorisation and status.lease_owner is None
    [notice] = await notifications(db)
    assert notice.kind is NotificationKind.REAUTHORISE
