"""Redis-only properties: round trips on the hot path, key layout, memory per conversation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from bots.state import Claim, open_store
from bots.state.redis import RedisStore
from flows.vocab import Channel, ConversationKey

ALICE = ConversationKey("tan-phu", Channel.TELEGRAM, "700000001")
# A session half-way through the registration form: about 200 bytes of compact JSON.
SESSION = json.dumps(
    {
        "f": "dang_ky",
        "v": "3f2a9c",
        "s": "so_dien_thoai",
        "a": {
            "ho_ten": "Nguyễn Văn An 1234",
            "don_vi": "Phòng Kỹ thuật",
            "chuc_vu": "Ủy viên BCH",
            "email": "an.nguyen1234@congdoan.vn",
            "ngay_sinh": "2001",
        },
        "r": 0,
    },
    ensure_ascii=False,
    separators=(",", ":"),
).encode()


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    store = await RedisStore.connect(redis_url, prefix=redis_prefix)
    yield store
    await store.close()


class _Counter:
    """Counts commands sent by one client (each is one round trip here: no pipelines)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.names: list[str] = []
        original: Callable[..., Awaitable[Any]] = client.execute_command

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.names.append(str(args[0]))
            return await original(*args, **kwargs)

        client.execute_command = counted  # type: ignore[method-assign]


async def test_hot_path_is_three_round_trips_per_message(store: RedisStore) -> None:
    await store.client.ping()  # connect and load nothing yet
    counter = _Counter(store.client)
    for n in range(20):
        counter.names.clear()
        claim = await store.accept_and_claim(ALICE, f"m{n}", b"inbound", "w1")
        assert isinstance(claim, Claim)
        nxt, sent = await store.commit_with_outbox(claim, SESSION, claim.items[-1].seq, [b"reply"])
        assert nxt is None
        await store.outbox_ack(ALICE, sent[-1].seq)
        # The first call of each script may add a SCRIPT LOAD after NOSCRIPT; after that,
        # exactly three EVALSHAs.
        if n > 0:
            assert counter.names == ["EVALSHA", "EVALSHA", "EVALSHA"]
    assert await store.outbox_read(ALICE) == []


async def test_key_layout_lists_exist_only_while_needed(
    store: RedisStore, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    conv, inbox, outbox = store.keys(ALICE)
    assert (conv, inbox, outbox) == (
        f"{redis_prefix}c:{{tan-phu:telegram:700000001}}",
        f"{redis_prefix}i:{{tan-phu:telegram:700000001}}",
        f"{redis_prefix}o:{{tan-phu:telegram:700000001}}",
    )
    await store.accept(ALICE, "m1", b"x")
    assert await redis_client.exists(inbox) == 1
    assert await redis_client.exists(outbox) == 0
    ttl = await redis_client.pttl(conv)
    assert 29 * 24 * 3600 * 1000 < ttl <= 30 * 24 * 3600 * 1000
    assert await redis_client.pttl(inbox) == -1  # pending items never expire
    claim = await store.claim(ALICE, "w1")
    assert claim is not None
    held = await redis_client.get(conv)
    assert held is not None and b"w1" in held
    await store.commit(claim, SESSION, claim.items[-1].seq, [b"reply"])
    assert await redis_client.exists(inbox) == 0
    value = await redis_client.get(conv)
    assert value is not None and SESSION in value and b"w1" not in value  # lock released
    assert await redis_client.pttl(outbox) == -1
    await store.outbox_ack(ALICE, 1)
    assert await redis_client.exists(outbox) == 0
    assert await redis_client.type(conv) == b"string"
    # The de-dup window is 8 bytes per id, bounded by the window size.
    for n in range(100):
        await store.accept(ALICE, f"more{n}", b"x")
    grown = await redis_client.get(conv)
    assert grown is not None and len(value) + 64 * 8 - 8 < len(grown) <= len(value) + 64 * 8


async def test_counters_survive_an_expired_hash_while_items_wait(
    redis_url: str, redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    store = await RedisStore.connect(redis_url, prefix=redis_prefix, session_ttl=0.2)
    try:
        await store.accept(ALICE, "m1", b"x")
        await store.accept(ALICE, "m2", b"y")
        conv, inbox, _ = store.keys(ALICE)
        await asyncio.sleep(0.3)
        assert await redis_client.exists(conv) == 0
        assert await redis_client.llen(inbox) == 2  # pending items outlive the session
        await store.accept(ALICE, "m3", b"z")
        claim = await store.claim(ALICE, "w1")
        assert claim is not None
        assert [(i.seq, i.message_id) for i in claim.items] == [(1, "m1"), (2, "m2"), (3, "m3")]
    finally:
        await store.close()


async def test_open_store_prefers_redis_and_uses_the_prefix(
    redis_url: str, redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    store = await open_store(redis_url=redis_url, prefix=redis_prefix, data_dir="/nonexistent")
    try:
        assert isinstance(store, RedisStore)
        await store.accept(ALICE, "m1", b"x")
        keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
        assert sorted(keys) == sorted(k.encode() for k in store.keys(ALICE)[:2])
    finally:
        await store.close()


async def test_memory_per_conversation_stays_under_1kb(
    store: RedisStore, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """2,000 conversations stopped half-way through the 8-message reference conversation, with a
    ~200-byte session: what Redis holds per conversation (MEMORY USAGE, exact)."""
    users = 2000

    async def half_way(user: int) -> None:
        key = ConversationKey("tan-phu", Channel.TELEGRAM, str(700_000_000 + user))
        for step in range(4):
            claim = await store.accept_and_claim(key, f"{user}:{step}", b"inbound", "w")
            assert isinstance(claim, Claim)
            _, sent = await store.commit_with_outbox(
                claim, SESSION, claim.items[-1].seq, [b"reply"]
            )
            await store.outbox_ack(key, sent[-1].seq)

    for start in range(0, users, 100):
        await asyncio.gather(*(half_way(u) for u in range(start, min(users, start + 100))))
    total = 0
    count = 0
    async for key in redis_client.scan_iter(match=f"{redis_prefix}*", count=1000):
        total += await redis_client.memory_usage(key, samples=0) or 0
        count += 1
    assert 190 <= len(SESSION) <= 210
    assert count == users  # one value per conversation, no lists left
    per_conversation = total / users
    print(
        f"\nRedis memory per conversation: {per_conversation:.0f} bytes ({len(SESSION)} B session)"
    )
    assert per_conversation < 1024
