"""One contract, three stores: memory, SQLite and Redis must behave the same.

Each test gets `make`, a factory of stores of one backend sharing one place (one SQLite file,
one Redis key prefix), so two stores made in one test behave like two processes.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bots.state import DUPLICATE, Claim, Deferral, StaleClaim, Store
from bots.state.memory import MemoryStore
from bots.state.redis import RedisStore
from bots.state.sqlite import SqliteStore
from flows.vocab import Channel, ConversationKey

Make = Callable[..., Awaitable[Store]]

ALICE = ConversationKey("tan-phu", Channel.TELEGRAM, "700000001")
BOB = ConversationKey("tan-phu", Channel.MESSENGER, "5551234")
# Every character that could break a key layout or a glob: the store must not care.
ODD = ConversationKey("ben-tre:x", Channel.WEBCHAT, "u:{a}*?[b] c%20\\é")


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    backend: str = request.param
    stores: list[Store] = []
    shared: list[MemoryStore] = []
    prefix = ""
    url = ""
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")

    async def factory(lease: float = 30.0, session_ttl: float = 3600.0) -> Store:
        store: Store
        if backend == "memory":
            # One process, one dict: a second "instance" is the same object.
            if not shared:
                shared.append(MemoryStore(lease=lease, session_ttl=session_ttl))
            store = shared[0]
        elif backend == "sqlite":
            store = await SqliteStore.open(
                tmp_path / "state.sqlite3", lease=lease, session_ttl=session_ttl
            )
        else:
            store = await RedisStore.connect(
                url, prefix=prefix, lease=lease, session_ttl=session_ttl
            )
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()


def _ids(claim: Claim | None) -> list[str]:
    assert claim is not None
    return [item.message_id for item in claim.items]


async def _drain(store: Store, claim: Claim | None, session: bytes | None = b"s") -> None:
    while claim is not None:
        claim = await store.commit(claim, session, claim.items[-1].seq, ())


# -- accept and de-duplication ---------------------------------------------------------------


async def test_accept_deduplicates_by_conversation_and_message_id(make: Make) -> None:
    store = await make()
    assert await store.accept(ALICE, "m1", b"one") is True
    assert await store.accept(ALICE, "m1", b"one again") is False
    assert await store.accept(ALICE, "m2", b"two") is True
    # The same platform id in another conversation is another message.
    assert await store.accept(BOB, "m1", b"bob") is True
    claim = await store.claim(ALICE, "w1")
    assert _ids(claim) == ["m1", "m2"]
    assert claim is not None and [i.payload for i in claim.items] == [b"one", b"two"]
    # Still a duplicate after it was handled.
    await _drain(store, claim)
    assert await store.accept(ALICE, "m1", b"late retry") is False
    assert await store.claim(ALICE, "w1") is None


async def test_five_concurrent_duplicate_accepts_store_one(make: Make) -> None:
    stores = [await make(), await make()]
    results = await asyncio.gather(
        *(stores[n % 2].accept(ALICE, "dup", f"copy {n}".encode()) for n in range(5))
    )
    assert sorted(results) == [False, False, False, False, True]
    claim = await stores[0].claim(ALICE, "w1")
    assert _ids(claim) == ["dup"]


async def test_dedupe_window_keeps_the_last_64_ids(make: Make) -> None:
    store = await make()
    for n in range(65):
        assert await store.accept(ALICE, f"id{n}", b"x")
        await _drain(store, await store.claim(ALICE, "w1"))
    assert await store.accept(ALICE, "id64", b"x") is False
    assert await store.accept(ALICE, "id1", b"x") is False
    # id0 fell out of the window: a retry this late is taken as new.
    assert await store.accept(ALICE, "id0", b"x") is True


# -- inbox order ---------------------------------------------------------------------------


async def test_inbox_items_keep_arrival_order_and_exact_bytes(make: Make) -> None:
    store = await make()
    payloads = [b"plain", b"with spaces 12 3 ", bytes(range(256)), b"", "Chào bạn".encode()]
    for n, payload in enumerate(payloads):
        assert await store.accept(ODD, f"mid {n} \u00e9", payload)
    claim = await store.claim(ODD, "w1")
    assert claim is not None
    assert [item.payload for item in claim.items] == payloads
    assert [item.message_id for item in claim.items] == [f"mid {n} é" for n in range(5)]
    seqs = [item.seq for item in claim.items]
    assert seqs == sorted(set(seqs))
    assert claim.session is None and claim.version == 0 and claim.key == ODD


async def test_seq_keeps_increasing_after_items_are_handled(make: Make) -> None:
    store = await make()
    await store.accept(ALICE, "a", b"a")
    first = await store.claim(ALICE, "w1")
    assert first is not None
    await _drain(store, first)
    await store.accept(ALICE, "b", b"b")
    second = await store.claim(ALICE, "w1")
    assert second is not None
    assert second.items[0].seq > first.items[-1].seq


# -- claim, commit, release ---------------------------------------------------------------------


async def test_claim_is_exclusive_until_released(make: Make) -> None:
    store, other = await make(), await make()
    assert await store.claim(ALICE, "w1") is None  # nothing pending: no lock taken
    await store.accept(ALICE, "m1", b"x")
    claim = await store.claim(ALICE, "w1")
    assert _ids(claim) == ["m1"]
    assert await other.claim(ALICE, "w2") is None
    assert await store.claim(ALICE, "w1") is None  # not re-entrant: one claim at a time
    assert await other.claim(BOB, "w2") is None  # other conversations are not locked
    # Releasing someone else's claim does nothing.
    assert claim is not None
    await other.release(Claim(ALICE, "w2", None, 0, ()))
    assert await other.claim(ALICE, "w2") is None
    await store.release(claim)
    taken = await other.claim(ALICE, "w2")
    assert _ids(taken) == ["m1"]  # released without commit: the item is still pending


async def test_commit_stores_session_and_releases(make: Make) -> None:
    store = await make()
    await store.accept(ALICE, "m1", b"x")
    claim = await store.claim(ALICE, "w1")
    assert claim is not None
    assert await store.commit(claim, b'{"step": "ho_ten"}', claim.items[-1].seq, [b"o1"]) is None
    assert await store.pending_keys() == []
    await store.accept(ALICE, "m2", b"y")
    again = await store.claim(ALICE, "w2")  # the lock was released: another owner may take it
    assert again is not None
    assert again.session == b'{"step": "ho_ten"}'
    assert again.version == claim.version + 1
    assert _ids(again) == ["m2"]
    # None deletes the session; the version still moves on.
    assert await store.commit(again, None, again.items[-1].seq, ()) is None
    await store.accept(ALICE, "m3", b"z")
    third = await store.claim(ALICE, "w1")
    assert third is not None and third.session is None
    assert third.version > again.version


async def test_commit_with_a_stale_version_writes_nothing(make: Make) -> None:
    store = await make()
    await store.accept(ALICE, "m1", b"x")
    old = await store.claim(ALICE, "w1")
    assert old is not None
    await store.accept(ALICE, "m2", b"y")
    current = await store.commit(old, b"v1", old.items[0].seq, [b"first"])
    assert current is not None and current.version == old.version + 1
    with pytest.raises(StaleClaim):
        await store.commit(old, b"overwrite", 99, [b"never"])
    assert _ids(current) == ["m2"]
    assert [i.payload for i in await store.outbox_read(ALICE)] == [b"first"]
    assert await store.commit(current, b"v2", current.items[-1].seq, ()) is None
    await store.accept(ALICE, "m3", b"z")
    check = await store.claim(ALICE, "w1")
    assert check is not None and check.session == b"v2" and _ids(check) == ["m3"]


async def test_expired_lease_lets_a_second_worker_in_and_refuses_the_first(make: Make) -> None:
    first_store = await make(lease=0.2)
    second_store = await make(lease=0.2)
    await first_store.accept(ALICE, "m1", b"x")
    first = await first_store.claim(ALICE, "w1")
    assert first is not None
    assert await second_store.claim(ALICE, "w2") is None  # lease still live
    await asyncio.sleep(0.35)
    second = await second_store.claim(ALICE, "w2")
    assert second is not None and _ids(second) == ["m1"]
    with pytest.raises(StaleClaim):
        await first_store.commit(first, b"from w1", 1, [b"w1 reply"])
    assert (
        await second_store.commit(second, b"from w2", second.items[-1].seq, [b"w2 reply"]) is None
    )
    # The stale worker also fails after the second one finished and released.
    with pytest.raises(StaleClaim):
        await first_store.commit(first, b"from w1", 1, [b"w1 reply"])
    assert [i.payload for i in await first_store.outbox_read(ALICE)] == [b"w2 reply"]
    await first_store.accept(ALICE, "m2", b"y")
    after = await first_store.claim(ALICE, "w1")
    assert after is not None and after.session == b"from w2"


async def test_items_arriving_during_processing_come_back_with_the_lock(make: Make) -> None:
    store, other = await make(), await make()
    await store.accept(ALICE, "m1", b"x")
    claim = await store.claim(ALICE, "w1")
    assert claim is not None
    await other.accept(ALICE, "m2", b"y")
    await other.accept(ALICE, "m3", b"z")
    nxt = await store.commit(claim, b"after m1", claim.items[-1].seq, [b"r1"])
    assert nxt is not None
    assert _ids(nxt) == ["m2", "m3"]
    assert nxt.owner == "w1" and nxt.session == b"after m1" and nxt.version == claim.version + 1
    assert await other.claim(ALICE, "w2") is None  # still ours
    # Handling only part of the claim keeps the rest pending.
    rest = await store.commit(nxt, b"after m2", nxt.items[0].seq, [b"r2"])
    assert _ids(rest) == ["m3"]
    assert rest is not None
    assert await store.commit(rest, b"after m3", rest.items[-1].seq, [b"r3"]) is None
    assert await other.claim(ALICE, "w2") is None  # empty, and not locked either
    await other.accept(ALICE, "m4", b"w")
    assert _ids(await other.claim(ALICE, "w2")) == ["m4"]


async def test_accept_and_claim(make: Make) -> None:
    store, other = await make(), await make()
    claim = await store.accept_and_claim(ALICE, "m1", b"x", "w1")
    assert isinstance(claim, Claim) and _ids(claim) == ["m1"] and claim.owner == "w1"
    assert await other.accept_and_claim(ALICE, "m1", b"x", "w2") == DUPLICATE
    assert await other.accept_and_claim(ALICE, "m2", b"y", "w2") is None  # stored, w1 has it
    nxt = await store.commit(claim, b"s", claim.items[-1].seq, ())
    assert _ids(nxt) == ["m2"]


# -- outbox ------------------------------------------------------------------------------------


async def test_outbox_keeps_order_and_ack_deletes(make: Make) -> None:
    store = await make()
    await store.accept(ALICE, "m1", b"x")
    await store.accept(ALICE, "m2", b"y")
    claim = await store.claim(ALICE, "w1")
    assert claim is not None
    nxt, added = await store.commit_with_outbox(claim, b"s", claim.items[0].seq, [b"a", b"b c"])
    assert nxt is not None
    assert [(i.seq, i.payload) for i in added] == [
        (i.seq, i.payload) for i in await store.outbox_read(ALICE)
    ]
    _, more = await store.commit_with_outbox(nxt, b"s", nxt.items[-1].seq, [bytes(range(256))])
    items = await store.outbox_read(ALICE)
    assert [i.payload for i in items] == [b"a", b"b c", bytes(range(256))]
    assert [i.seq for i in items] == sorted({i.seq for i in items})
    assert more[0].seq == items[2].seq
    assert await store.outbox_keys() == [ALICE]
    assert [i.payload for i in await store.outbox_read(ALICE, items[0].seq)] == [
        b"b c",
        bytes(range(256)),
    ]
    await store.outbox_ack(ALICE, items[1].seq)
    assert [i.seq for i in await store.outbox_read(ALICE)] == [items[2].seq]
    await store.outbox_ack(ALICE, items[1].seq)  # acknowledging twice is harmless
    await store.outbox_ack(ALICE, items[2].seq)
    assert await store.outbox_read(ALICE) == []
    assert await store.outbox_keys() == []
    # Sequence numbers never go back, even once the outbox was emptied.
    await store.accept(ALICE, "m3", b"z")
    again = await store.claim(ALICE, "w1")
    assert again is not None
    _, last = await store.commit_with_outbox(again, b"s", again.items[-1].seq, [b"d"])
    assert last[0].seq > items[2].seq
    assert await store.outbox_read(BOB) == []


# -- recovery and expiry ---------------------------------------------------------------------


async def test_pending_keys_lists_conversations_with_waiting_items(make: Make) -> None:
    store = await make()
    assert await store.pending_keys() == []
    for key in (ALICE, BOB, ODD):
        await store.accept(key, "m1", b"x")
    assert set(await store.pending_keys()) == {ALICE, BOB, ODD}
    claim = await store.claim(ODD, "w1")
    assert set(await store.pending_keys()) == {ALICE, BOB, ODD}  # claimed is still pending
    await _drain(store, claim)
    assert set(await store.pending_keys()) == {ALICE, BOB}


async def test_idle_session_expires_after_its_ttl(make: Make) -> None:
    store = await make(session_ttl=0.4)
    await store.accept(ALICE, "m1", b"x")
    await _drain(store, await store.claim(ALICE, "w1"), b"kept")
    await store.accept(ALICE, "m2", b"y")
    fresh = await store.claim(ALICE, "w1")
    assert fresh is not None and fresh.session == b"kept"
    await _drain(store, fresh, b"kept")
    await asyncio.sleep(0.6)
    await store.accept(ALICE, "m3", b"z")
    expired = await store.claim(ALICE, "w1")
    assert expired is not None and expired.session is None
    assert _ids(expired) == ["m3"]


# -- concurrency regression ----------------------------------------------------------------------


async def test_concurrent_messages_and_workers_process_each_message_once_in_order(
    make: Make,
) -> None:
    """Many messages of one person arrive at once; every arrival tries to drain the inbox the
    way the pipeline does (accept, then claim-and-drain). No background poller: a message left
    behind between "inbox empty" and "lock released" would show up as missing."""
    stores = [await make(), await make()]
    total = 120
    handled_log: list[tuple[int, str]] = []

    async def drain(store: Store, claim: Claim | None) -> None:
        while claim is not None:
            state: dict[str, Any] = json.loads(claim.session or b'{"seen": [], "last": 0}')
            item = claim.items[0]  # one at a time, as the engine does
            assert item.seq > state["last"], "an item was handled twice or out of order"
            state["seen"].append(item.message_id)
            state["last"] = item.seq
            handled_log.append((item.seq, item.message_id))
            await asyncio.sleep(random.random() / 1000)  # an engine that yields
            claim = await store.commit(
                claim, json.dumps(state).encode(), item.seq, [item.message_id.encode()]
            )

    async def arrive(n: int) -> None:
        store = stores[n % len(stores)]
        await asyncio.sleep(random.random() / 200)
        if n % 2:
            result = await store.accept_and_claim(ALICE, f"m{n}", b"p", f"worker-{n}")
            assert result != DUPLICATE
            await drain(store, result if isinstance(result, Claim) else None)
        else:
            assert await store.accept(ALICE, f"m{n}", b"p")
            await drain(store, await store.claim(ALICE, f"worker-{n}"))

    await asyncio.gather(*(arrive(n) for n in range(total)))
    # Retried webhooks for the messages still in the de-dup window: nothing new is stored.
    recent = [mid for _, mid in handled_log[-64:]]
    again = await asyncio.gather(
        *(stores[n % 2].accept(ALICE, m, b"p") for n, m in enumerate(recent))
    )
    assert not any(again)

    assert await stores[0].pending_keys() == []
    assert len(handled_log) == total
    assert sorted(mid for _, mid in handled_log) == sorted(f"m{n}" for n in range(total))
    seqs = [seq for seq, _ in handled_log]
    assert seqs == sorted(seqs)
    outbox = await stores[1].outbox_read(ALICE)
    assert [item.payload.decode() for item in outbox] == [mid for _, mid in handled_log]
    await stores[0].accept(ALICE, "final", b"p")
    claim = await stores[0].claim(ALICE, "checker")
    assert claim is not None
    state = json.loads(claim.session or b"{}")
    assert state["seen"] == [mid for _, mid in handled_log]
    assert claim.version == total


# -- the sender: lease and deferral of the outbox's first item -------------------------------


async def _replies(store: Store, key: ConversationKey, *payloads: bytes) -> list[int]:
    """Append `payloads` to the conversation's outbox (through a real turn); their seqs."""
    mid = f"turn-{payloads[0].decode()}"
    assert await store.accept(key, mid, b"in")
    claim = await store.claim(key, "worker")
    assert claim is not None
    nxt, added = await store.commit_with_outbox(claim, b"s", claim.items[-1].seq, payloads)
    assert nxt is None
    return [item.seq for item in added]


async def test_sender_lease_is_exclusive_renewable_and_released_by_done(make: Make) -> None:
    first_store, second_store = await make(), await make()
    seqs = await _replies(first_store, BOB, b"a", b"b")
    sending = await first_store.outbox_claim(BOB, "sender-1", 30.0)
    assert sending is not None and sending.deferral is None
    assert [(i.seq, i.payload) for i in sending.items] == list(zip(seqs, [b"a", b"b"], strict=True))
    assert await second_store.outbox_claim(BOB, "sender-2", 30.0) is None  # held
    assert await first_store.outbox_claim(BOB, "sender-1", 30.0) is not None  # renewed
    # A read without a lease neither waits for nor disturbs the holder.
    peek = await second_store.outbox_claim(BOB, "", 0)
    assert peek is not None and len(peek.items) == 2
    await first_store.outbox_done(BOB, "sender-1", seqs[0], 30.0)  # ack one, keep the lease
    assert await second_store.outbox_claim(BOB, "sender-2", 30.0) is None
    await first_store.outbox_done(BOB, "sender-1", seqs[1])  # ack the rest and release
    after = await second_store.outbox_claim(BOB, "sender-2", 30.0)
    assert after is not None and after.items == ()
    assert await second_store.outbox_keys() == []


async def test_an_expired_sender_lease_lets_another_sender_in(make: Make) -> None:
    first_store, second_store = await make(), await make()
    await _replies(first_store, BOB, b"a")
    assert await first_store.outbox_claim(BOB, "sender-1", 0.2) is not None
    assert await second_store.outbox_claim(BOB, "sender-2", 0.2) is None
    await asyncio.sleep(0.35)
    taken = await second_store.outbox_claim(BOB, "sender-2", 30.0)
    assert taken is not None and [i.payload for i in taken.items] == [b"a"]
    # The first sender's late release does not free the second sender's lease.
    await first_store.outbox_done(BOB, "sender-1", 0)
    assert await first_store.outbox_claim(BOB, "sender-1", 30.0) is None


async def test_deferral_is_kept_until_its_item_is_acknowledged(make: Make) -> None:
    first_store, second_store = await make(), await make()
    seqs = await _replies(first_store, BOB, b"a", b"b")
    assert await first_store.outbox_claim(BOB, "sender-1", 30.0) is not None
    later = 4_000_000_000.0  # 2096: not due in this test's lifetime
    deferral = Deferral(seqs[0], 3, later, "retry", "Graph API tạm thời lỗi (mã 2)")
    await first_store.outbox_defer(BOB, "sender-1", deferral)
    # Another process (store instance) sees the same deferral; the lease was released.
    sending = await second_store.outbox_claim(BOB, "sender-2", 30.0)
    assert sending is not None and sending.deferral == deferral
    assert await second_store.outbox_due(1_000.0) == []
    assert await second_store.outbox_due(later) == [BOB]
    # Waiting for the person (no time): never due by time, still listed as undelivered.
    window = Deferral(seqs[0], 3, float("inf"), "window")
    await second_store.outbox_defer(BOB, "sender-2", window)
    again = await first_store.outbox_claim(BOB, "", 0)
    assert again is not None and again.deferral == window
    assert await first_store.outbox_due(later * 10) == []
    assert await first_store.outbox_keys() == [BOB]
    await first_store.outbox_done(BOB, "", seqs[0])
    rest = await first_store.outbox_claim(BOB, "", 0)
    assert rest is not None and rest.deferral is None
    assert [i.payload for i in rest.items] == [b"b"]
    assert await first_store.outbox_due(0.0) == [BOB]


async def test_a_stale_deferral_is_ignored_and_deferring_a_gone_item_does_nothing(
    make: Make,
) -> None:
    store = await make()
    seqs = await _replies(store, ALICE, b"a", b"b")
    await store.outbox_defer(ALICE, "", Deferral(seqs[0], 1, 4_000_000_000.0, "retry"))
    await store.outbox_ack(ALICE, seqs[0])  # acknowledged elsewhere (the old way)
    sending = await store.outbox_claim(ALICE, "", 0)
    assert sending is not None and sending.deferral is None
    assert await store.outbox_due(0.0) == [ALICE]
    await store.outbox_defer(ALICE, "", Deferral(seqs[0], 2, 4_000_000_000.0, "retry"))
    sending = await store.outbox_claim(ALICE, "", 0)
    assert sending is not None and sending.deferral is None
    await store.outbox_done(ALICE, "", seqs[1])
    assert await store.outbox_keys() == []
    assert await store.outbox_due(0.0) == []
