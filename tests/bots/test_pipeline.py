"""The pipeline against every real store (memory, SQLite, Redis), the real engine and records."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.base import RetryLater
from bots.pipeline import (
    DeliveryPolicy,
    Pipeline,
    decode_inbound,
    decode_outbound,
    encode_inbound,
    encode_outbound,
)
from bots.records.models import ChannelIdentity, ProcessedInbound
from bots.runtime import Flows, SqlRecords
from flows import session as codec
from flows.engine import Engine
from flows.vocab import (
    Attachment,
    Channel,
    Choice,
    ConversationKey,
    InboundKind,
    NoticeKind,
    Outbound,
)
from tests.bots.conftest import Recorder, StoreFactory, inbound

KEY = ConversationKey("thu", Channel.TELEGRAM, "u1")


def make_pipeline(store: Any, flows: Flows, adapter: Recorder, **kw: Any) -> Pipeline:
    adapters = {Channel.TELEGRAM: adapter}
    return Pipeline(store, Engine(flows.compiled), codec, adapters=adapters, **kw)


def received(adapter: Recorder, user: str = "u1") -> list[str]:
    """The "Đã nhận: …" replies, in delivery order."""
    return [t.removeprefix("Đã nhận: ") for t in adapter.texts(user) if t.startswith("Đã nhận")]


# -- codecs ---------------------------------------------------------------------------------------


def test_inbound_codec_round_trips_every_field() -> None:
    original = inbound("u1", "Xin chào", kind=InboundKind.IMAGE, ref="abc")
    original = type(original)(
        **{
            **{f: getattr(original, f) for f in original.__slots__},  # type: ignore[attr-defined]
            "payload": "c:x:y:1",
            "attachments": (
                Attachment("image/png", None, "f1", "u1", 10, "ab" * 32, "a.png", "QR", "ff00"),
                Attachment("image/jpeg", "https://cdn/x.jpg"),
            ),
            "data": (("k", "v"),),
        }
    )
    key = ConversationKey(original.district, original.channel, original.user_id)
    assert decode_inbound(encode_inbound(original), key) == original
    short = inbound("u1", "hi")
    assert decode_inbound(encode_inbound(short), key).text == "hi"
    assert len(encode_inbound(short)) < 60  # compact: no key, no empty fields


def test_outbound_codec_round_trips_and_maps_images() -> None:
    message = Outbound("Chọn", (Choice("Có", "c:1"),), "media/a.png", None, NoticeKind.RETRY)
    assert decode_outbound(encode_outbound(message)) == message
    assert decode_outbound(encode_outbound(message, "/media/x.png")).image == "/media/x.png"
    assert decode_outbound(encode_outbound(Outbound("a"))) == Outbound("a")


# -- conversations --------------------------------------------------------------------------------


async def test_duplicate_inbound_is_processed_once(
    make_store: StoreFactory, echo_flows: Flows, records: SqlRecords
) -> None:
    store = await make_store()
    adapter = Recorder()
    pipeline = make_pipeline(store, echo_flows, adapter, records=records)
    assert await pipeline.process(inbound("u1", kind=InboundKind.START))
    first = inbound("u1", "một", message_id="dup-1")
    assert await pipeline.process(first) is True
    assert await pipeline.process(first) is False  # the platform retried its webhook
    assert await pipeline.ingest(first) is False
    await pipeline.idle()
    assert received(adapter) == ["một"]
    async with records.records.sessions() as db:
        rows = await db.scalar(
            select(func.count()).select_from(ProcessedInbound).where(
                ProcessedInbound.inbound_id == "dup-1"
            )
        )
        identity = await db.scalar(select(ChannelIdentity))
    assert rows == 1
    assert identity is not None and identity.user_id == "u1"
    assert identity.last_inbound_at is not None


async def test_messages_ingested_back_to_back_are_handled_in_order(
    make_store: StoreFactory, echo_flows: Flows
) -> None:
    store = await make_store()
    adapter = Recorder()
    pipeline = make_pipeline(store, echo_flows, adapter)
    await pipeline.process(inbound("u1", kind=InboundKind.START))
    words = [f"tin {n}" for n in range(25)]
    for word in words:  # each accepted durably before the next; workers run meanwhile
        assert await pipeline.ingest(inbound("u1", word))
    await pipeline.idle()
    assert received(adapter) == words
    claim = await store.claim(KEY, "probe")
    assert claim is None  # nothing left pending
    outbox = await store.outbox_read(KEY)
    assert outbox == []  # everything delivered and acknowledged


async def test_concurrent_messages_of_many_users(
    make_store: StoreFactory, echo_flows: Flows
) -> None:
    store = await make_store()
    adapter = Recorder()
    pipeline = make_pipeline(store, echo_flows, adapter)
    users = [f"u{n}" for n in range(8)]
    await asyncio.gather(*(pipeline.process(inbound(u, kind=InboundKind.START)) for u in users))
    sent = {u: [f"{u}-{n}" for n in range(6)] for u in users}
    # Every message of every user at once: per user, the store's arrival order decides.
    await asyncio.gather(*(pipeline.process(inbound(u, w)) for u in users for w in sent[u]))
    await pipeline.idle()
    for user in users:
        got = received(adapter, user)
        assert sorted(got) == sorted(sent[user])  # each exactly once
        key = ConversationKey("thu", Channel.TELEGRAM, user)
        claim = await store.claim(key, "probe")
        assert claim is None
        # The stored session holds the answer of the last reply sent: one serial history.
        raw = await _session(store, key)
        assert raw is not None and codec.loads(raw).data["x"] == got[-1]


async def _session(store: Any, key: ConversationKey) -> bytes | None:
    """The stored session, read through a claim (an inbound is accepted to make one)."""
    await store.accept(key, f"probe-{datetime.now().timestamp()}", encode_inbound(inbound("x")))
    claim = await store.claim(key, "probe")
    assert claim is not None
    await store.release(claim)
    return claim.session


async def test_an_expired_lease_never_answers_twice(
    make_store: StoreFactory, echo_flows: Flows, records: SqlRecords, caplog: Any
) -> None:
    store = await make_store(lease=0.2)
    adapter = Recorder()
    slow_started = asyncio.Event()

    class SlowRecords:
        """The real records, with the first write stalling past the lease."""

        def __init__(self) -> None:
            self.stalled = False

        async def apply(self, *args: Any) -> None:
            if not self.stalled:
                self.stalled = True
                slow_started.set()
                await asyncio.sleep(0.8)
            await records.apply(*args)

        async def touch(self, *args: Any) -> None:
            await records.touch(*args)

        async def restore(self, *args: Any) -> Any:
            return await records.restore(*args)

    worker_a = make_pipeline(store, echo_flows, adapter, records=SlowRecords())
    worker_b = make_pipeline(store, echo_flows, adapter, records=records)  # "another process"
    await worker_b.process(inbound("u1", kind=InboundKind.START))
    caplog.set_level(logging.WARNING, logger="loa.pipeline")
    assert await worker_a.ingest(inbound("u1", "một", message_id="slow-1"))
    await asyncio.wait_for(slow_started.wait(), 5)
    await asyncio.sleep(0.35)  # A's lease has run out while it waits on the database
    assert await worker_b.recover() == 1  # B finds the conversation and takes it over
    await worker_b.idle()
    assert received(adapter) == ["một"]
    await worker_a.idle()  # A wakes up: its commit is refused, it claims again, finds nothing
    assert received(adapter) == ["một"]
    assert any("lease expired" in r.getMessage() for r in caplog.records)
    async with records.records.sessions() as db:
        count = await db.scalar(
            select(func.count()).select_from(ProcessedInbound).where(
                ProcessedInbound.inbound_id == "slow-1"
            )
        )
    assert count == 1
    assert worker_a.processed + worker_b.processed == 2  # START and "một", once each


async def test_recover_drains_what_a_crashed_process_accepted(
    make_store: StoreFactory, echo_flows: Flows
) -> None:
    store = await make_store()
    for item in (inbound("u1", kind=InboundKind.START), inbound("u1", "một"), inbound("u1", "hai")):
        assert await store.accept(KEY, item.message_id, encode_inbound(item))
    adapter = Recorder()
    pipeline = make_pipeline(store, echo_flows, adapter)
    assert await pipeline.recover() == 1
    await pipeline.idle()
    assert adapter.texts() == ["Bạn gửi gì?", "Đã nhận: một", "Bạn gửi gì?", "Đã nhận: hai",
                               "Bạn gửi gì?"]


async def test_delivery_retries_in_order_then_acknowledges(
    make_store: StoreFactory, echo_flows: Flows
) -> None:
    store = await make_store()

    class Flaky(Recorder):
        failures = 2

        async def send(self, key: ConversationKey, message: Outbound) -> None:
            if self.failures:
                self.failures -= 1
                raise RetryLater("429", retry_after=0.01)
            await super().send(key, message)

    adapter = Flaky()
    pipeline = make_pipeline(store, echo_flows, adapter, delivery=DeliveryPolicy(backoff=0.01))
    await pipeline.process(inbound("u1", kind=InboundKind.START))
    await pipeline.process(inbound("u1", "một"))
    assert adapter.texts() == ["Bạn gửi gì?", "Đã nhận: một", "Bạn gửi gì?"]
    assert await store.outbox_read(KEY) == []


async def test_undelivered_replies_stay_until_the_channel_takes_them(
    make_store: StoreFactory, echo_flows: Flows
) -> None:
    store = await make_store()

    class Down(Recorder):
        down = True

        async def send(self, key: ConversationKey, message: Outbound) -> None:
            if self.down:
                raise RetryLater("503")
            await super().send(key, message)

    adapter = Down()
    pipeline = make_pipeline(store, echo_flows, adapter, delivery=DeliveryPolicy(attempts=1))
    await pipeline.process(inbound("u1", kind=InboundKind.START))
    await pipeline.process(inbound("u1", "một"))
    assert adapter.sent == []
    assert len(await store.outbox_read(KEY)) == 3  # kept, in order
    adapter.down = False
    await pipeline.process(inbound("u1", "hai"))  # the next turn sends the backlog first
    assert adapter.texts() == ["Bạn gửi gì?", "Đã nhận: một", "Bạn gửi gì?", "Đã nhận: hai",
                               "Bạn gửi gì?"]


@pytest.mark.parametrize("make_store", ["memory"], indirect=True)
async def test_engine_errors_are_logged_and_apologised_for(
    make_store: StoreFactory, echo_flows: Flows, caplog: Any
) -> None:
    store = await make_store()
    adapter = Recorder()

    class Broken:
        def handle(self, session: Any, inbound: Any, now: datetime) -> Any:
            raise RuntimeError("boom")

    pipeline = Pipeline(store, Broken(), codec, adapters={Channel.TELEGRAM: adapter})
    with caplog.at_level(logging.ERROR, logger="loa.pipeline"):
        await pipeline.process(inbound("u1", "một"))
    assert [m.notice for _, m in adapter.sent] == [NoticeKind.ERROR]
    assert "boom" in caplog.text
    assert await store.claim(KEY, "probe") is None  # moved past the message, not stuck on it


@pytest.mark.parametrize("make_store", ["memory"], indirect=True)
async def test_an_error_the_engine_reports_is_logged_with_its_traceback(
    make_store: StoreFactory, echo_flows: Flows, caplog: Any
) -> None:
    from flows.engine import Turn

    store = await make_store()
    adapter = Recorder()
    real = Engine(echo_flows.compiled)

    class Reporting:
        def handle(self, session: Any, inbound: Any, now: datetime) -> Any:
            turn = real.handle(session, inbound, now)
            return Turn(turn.session, turn.outbound, turn.events, ValueError("placeholder"))

    pipeline = Pipeline(store, Reporting(), codec, adapters={Channel.TELEGRAM: adapter})
    with caplog.at_level(logging.ERROR, logger="loa.pipeline"):
        await pipeline.process(inbound("u1", kind=InboundKind.START, message_id="start-7"))
    (record,) = [r for r in caplog.records if "engine error" in r.getMessage()]
    assert "start-7" in record.getMessage() and record.exc_info is not None
    assert adapter.texts() == ["Bạn gửi gì?"]  # the turn's replies still go out


@pytest.mark.parametrize("make_store", ["memory", "sqlite"], indirect=True)
async def test_the_media_step_runs_before_the_engine_and_may_refuse(
    make_store: StoreFactory, echo_flows: Flows
) -> None:
    store = await make_store()
    adapter = Recorder()
    seen: list[str] = []

    class Refused(Exception):
        text = "Ảnh này không đọc được, bạn gửi lại nhé."

    async def capture(item: Any) -> Any:
        seen.append(item.message_id)
        if item.message_id == "bad":
            raise Refused("broken jpeg")
        if item.message_id == "outage":
            raise ConnectionError("CDN down")
        return item

    pipeline = make_pipeline(store, echo_flows, adapter, capture=capture)
    await pipeline.process(inbound("u1", kind=InboundKind.START))
    await pipeline.process(inbound("u1", "chữ"))
    assert seen == []  # only images and files go through the media step
    await pipeline.process(inbound("u1", kind=InboundKind.IMAGE, message_id="bad"))
    assert [(m.text, m.notice) for _, m in adapter.sent[-1:]] == [
        (Refused.text, NoticeKind.RETRY)
    ]
    with pytest.raises(ConnectionError):
        await pipeline.process(inbound("u1", kind=InboundKind.IMAGE, message_id="outage"))
    claim = await store.claim(KEY, "probe")  # the message waits in the inbox for a retry
    assert claim is not None and [p.message_id for p in claim.items] == ["outage"]
    assert seen == ["bad", "outage"]
