"""Token buckets: counted, never timed (a bucket this slow refills nothing during a test)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from bots.delivery import LIMITS, buckets, credential
from bots.ratelimit import LocalLimiter, Rate, RedisLimiter, limiter_for
from bots.state.memory import MemoryStore
from bots.state.redis import RedisStore
from flows.vocab import Channel, ConversationKey

SLOW = Rate(per_second=0.0001, burst=10)  # ten at once, then one every ~3 hours
REPO = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, sys
import redis.asyncio
from bots.ratelimit import Rate, RedisLimiter

async def main(url, prefix, tries):
    client = redis.asyncio.Redis.from_url(url)
    limiter = RedisLimiter(client, prefix)
    granted = 0
    for _ in range(tries):
        grant = await limiter.reserve("telegram:123", [("", Rate(0.0001, 10))], max_wait=0)
        granted += grant.granted
    await client.aclose()
    print(granted)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def _count(limiter: Any, group: str, tries: int, rate: Rate = SLOW) -> int:
    granted = 0
    for _ in range(tries):
        granted += (await limiter.reserve(group, [("", rate)], max_wait=0)).granted
    return granted


async def test_a_local_bucket_grants_its_burst_then_refuses() -> None:
    limiter = LocalLimiter()
    assert await _count(limiter, "telegram:1", 25) == 10
    refused = await limiter.reserve("telegram:1", [("", SLOW)], max_wait=0)
    assert not refused.granted and refused.wait > 3000  # it says how long it would take
    assert await _count(limiter, "telegram:2", 25) == 10  # another bot, another bucket


async def test_two_processes_share_one_redis_bucket(redis_url: str, redis_prefix: str) -> None:
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, redis_url, redis_prefix, "40",
            cwd=REPO, stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await run.communicate() for run in runs]
    counts = [int(out.decode()) for out, _ in outputs]
    assert sum(counts) == 10, counts  # not 20: one bucket for both processes


async def test_redis_limiter_reserves_every_bucket_or_none(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    limiter = RedisLimiter(redis_client, redis_prefix)
    bot, chat = Rate(0.0001, 5), Rate(0.0001, 2)
    granted = 0
    for _ in range(4):  # one chat: its bucket (2) runs out first
        grant = await limiter.reserve("telegram:9", [("", bot), (":c:1", chat)], max_wait=0)
        granted += grant.granted
    assert granted == 2
    # The refusals took nothing from the bot's bucket: three more chats get the other three.
    others = 0
    for user in ("2", "3", "4", "5"):
        grant = await limiter.reserve("telegram:9", [("", bot), (f":c:{user}", chat)], max_wait=0)
        others += grant.granted
    assert others == 3
    assert await redis_client.ttl(limiter.key("telegram:9")) > 0  # keys clean themselves up


async def test_a_reservation_may_wait_its_turn(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    limiter = RedisLimiter(redis_client, redis_prefix)
    one_per_second = Rate(1.0, 2)
    first = [await limiter.reserve("zalo:app", [("", one_per_second)], max_wait=5) for _ in "ab"]
    assert [g.wait for g in first] == [0.0, 0.0]
    third = await limiter.reserve("zalo:app", [("", one_per_second)], max_wait=5)
    assert third.granted and 0.5 < third.wait <= 1.0  # reserved: the sender sleeps, then sends


async def test_the_limiter_follows_the_store(redis_url: str, redis_prefix: str) -> None:
    store = await RedisStore.connect(redis_url, prefix=redis_prefix)
    try:
        assert isinstance(limiter_for(store), RedisLimiter)
    finally:
        await store.close()
    assert isinstance(limiter_for(MemoryStore()), LocalLimiter)


def test_buckets_are_per_credential() -> None:
    class Pages:
        pages = (type("P", (), {"district": "tan-phu", "page_id": "1029"})(),)

    class ZaloApp:
        app_id = "4321"

    messenger = ConversationKey("tan-phu", Channel.MESSENGER, "psid")
    assert credential(Pages(), messenger) == "1029"
    zalo_a = ConversationKey("tan-phu", Channel.ZALO, "u1")
    zalo_b = ConversationKey("ben-tre", Channel.ZALO, "u2")
    assert buckets(ZaloApp(), zalo_a) == buckets(ZaloApp(), zalo_b)  # one app, one limit
    telegram = ConversationKey("tan-phu", Channel.TELEGRAM, "42")
    found = buckets(object(), telegram)
    assert found is not None
    group, chosen = found
    assert group == "telegram:tan-phu"
    assert chosen == [("", LIMITS[Channel.TELEGRAM].credential), (":c:42", Rate(1, 3))]
    assert buckets(object(), ConversationKey("x", Channel.WEBCHAT, "u")) is None


@pytest.mark.parametrize("channel", [Channel.TELEGRAM, Channel.ZALOBOT])
def test_chat_limits_exist_where_platforms_throttle_one_chat(channel: Channel) -> None:
    limits = LIMITS[channel]
    assert limits.chat is not None and limits.chat.per_second <= 1


async def test_the_sender_honours_a_chat_limit_by_deferring(
    tmp_path: Path,
) -> None:
    from bots.delivery import DeferReason, DeliveryPolicy
    from bots.pipeline import Pipeline
    from bots.runtime import load_flows
    from flows import session as codec
    from flows.engine import Engine
    from tests.bots.conftest import ECHO_YAML, Recorder
    from tests.delivery.conftest import eventually, queue_reply

    (tmp_path / "flows.yaml").write_text(ECHO_YAML, encoding="utf-8")
    store = MemoryStore()
    adapter = Recorder()
    pipeline = Pipeline(
        store, Engine(load_flows(tmp_path / "flows.yaml").compiled), codec,
        adapters={Channel.TELEGRAM: adapter}, limiter=LocalLimiter(),
        delivery=DeliveryPolicy(max_wait=0.1),
    )
    key = ConversationKey("thu", Channel.TELEGRAM, "42")
    await queue_reply(store, key, *[f"tin {n}" for n in range(5)])
    assert await pipeline.deliver(key) == 3  # Telegram's burst in one chat, then ~1/s
    sending = await store.outbox_claim(key, "", 0)
    assert sending is not None and sending.deferral is not None
    assert sending.deferral.reason == DeferReason.WAIT.value
    assert sending.deferral.attempts == 0  # waiting for a token is not a failed try
    await eventually(lambda: len(adapter.sent) == 5, timeout=5)
    assert adapter.texts() == [f"tin {n}" for n in range(5)]
    pipeline.cancel_timers()
