"""ScriptRunner (bots/state/batching.py): the script calls of one event-loop iteration share one
round trip; each caller still gets its own result or error; an unknown script is loaded."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from bots.state.batching import ScriptRunner

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('không được')"


class Counting:
    """The client, counting the pipelines it opens (one per round trip of a batch)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.pipelines = 0

    def pipeline(self, **options: Any) -> Any:
        self.pipelines += 1
        return self.client.pipeline(**options)


async def test_concurrent_calls_share_one_round_trip(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    counting = Counting(redis_client)
    runner = ScriptRunner(counting)
    incr = redis_client.register_script(INCR)
    await incr(keys=[f"{redis_prefix}warm"], args=[0])  # loaded once, as the store's are
    keys = [f"{redis_prefix}n{i % 5}" for i in range(50)]
    results = await asyncio.gather(*(runner(incr, [key], [i]) for i, key in enumerate(keys)))
    assert counting.pipelines == 1
    # Each caller got its own script's answer, in the order the calls were made per key.
    for i, key in enumerate(keys):
        assert results[i] == sum(j for j in range(i + 1) if keys[j] == key)


async def test_each_caller_gets_its_own_error_and_unknown_scripts_are_loaded(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    runner = ScriptRunner(redis_client)
    incr = redis_client.register_script(INCR)
    await incr(keys=[f"{redis_prefix}warm"], args=[0])
    fail = redis_client.register_script(FAIL)
    # A script this server has never seen (unique body): the batch answers NOSCRIPT for it.
    fresh = redis_client.register_script(f"-- {uuid.uuid4()}\n{INCR}")
    ok, bad, new = await asyncio.gather(
        runner(incr, [f"{redis_prefix}a"], [2]),
        runner(fail, [f"{redis_prefix}b"], []),
        runner(fresh, [f"{redis_prefix}c"], [3]),
        return_exceptions=True,
    )
    assert ok == 2
    assert isinstance(bad, ResponseError) and "không được" in str(bad)
    assert new == 3
    assert await redis_client.get(f"{redis_prefix}c") == b"3"


async def test_a_lost_connection_fails_every_call_of_the_batch() -> None:
    dead = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    runner = ScriptRunner(dead)
    script = dead.register_script(INCR)
    results = await asyncio.gather(
        runner(script, ["x"], [1]), runner(script, ["y"], [1]), return_exceptions=True
    )
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results)
    await dead.aclose()
    with pytest.raises(redis.exceptions.ConnectionError):
        await runner(script, ["z"], [1])  # a lone call fails the same way


async def test_a_leader_cancelled_while_gathering_still_runs_the_others(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    runner = ScriptRunner(redis_client)
    incr = redis_client.register_script(INCR)
    await incr(keys=[f"{redis_prefix}warm"], args=[0])
    leader = asyncio.ensure_future(runner(incr, [f"{redis_prefix}l"], [1]))
    follower = asyncio.ensure_future(runner(incr, [f"{redis_prefix}f"], [5]))
    await asyncio.sleep(0)  # the leader is gathering, the follower has joined it
    assert runner._joining is not None and len(runner._joining) == 1
    leader.cancel()
    assert await follower == 5
    with pytest.raises(asyncio.CancelledError):
        await leader
