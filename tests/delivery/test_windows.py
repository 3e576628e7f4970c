"""Messaging windows: nothing is attempted outside them; the reply waits for the person."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bots.delivery import DeferReason, window_open
from bots.records.models import ChannelIdentity
from flows.vocab import Channel, ConversationKey, Inbound, InboundKind
from tests.delivery.conftest import Rig, message, queue_reply

FB = ConversationKey("thu", Channel.MESSENGER, "5551234")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_each_channel_has_its_window() -> None:
    hours = timedelta(hours=1)
    assert window_open(Channel.MESSENGER, NOW - 23 * hours, NOW)
    assert not window_open(Channel.MESSENGER, NOW - 25 * hours, NOW)
    assert window_open(Channel.ZALO, NOW - 47 * hours, NOW)
    assert not window_open(Channel.ZALO, NOW - 49 * hours, NOW)
    assert not window_open(Channel.MESSENGER, None, NOW)  # never wrote, on record
    for channel in (Channel.TELEGRAM, Channel.ZALOBOT, Channel.WEBCHAT, Channel.CONSOLE):
        assert window_open(channel, NOW - 1000 * hours, NOW)
        assert window_open(channel, None, NOW)


def texts(graph: Any) -> list[str]:
    return [str(m.get("text")) for m in graph.messages]


async def test_outside_the_window_nothing_is_attempted_until_the_person_writes(
    rig: Rig, messenger: Any
) -> None:
    graph, adapter = messenger
    pipeline = rig.pipeline(adapter, Channel.MESSENGER)
    await rig.records.touch(FB, datetime.now(UTC) - timedelta(hours=30), None)
    await queue_reply(rig.store, FB, "Chứng nhận của bạn đã sẵn sàng.", "Cảm ơn bạn!")
    assert await pipeline.deliver(FB) == 0
    assert graph.sends == []  # not even tried
    sending = await rig.store.outbox_claim(FB, "", 0)
    assert sending is not None and len(sending.items) == 2
    assert sending.deferral is not None
    assert sending.deferral.reason == DeferReason.WINDOW.value
    assert math.isinf(sending.deferral.not_before)
    assert await pipeline.recover() == 0  # no sweep wakes it: only the person can
    assert graph.sends == []

    await pipeline.process(message(FB.user_id, "chào", channel=Channel.MESSENGER))
    sent = texts(graph)
    assert sent[:2] == ["Chứng nhận của bạn đã sẵn sàng.", "Cảm ơn bạn!"]  # first, in order
    assert len(sent) > 2  # then the answer to what they just wrote
    assert (await rig.store.outbox_claim(FB, "", 0)).items == ()  # type: ignore[union-attr]


async def test_a_platform_that_says_outside_window_keeps_the_reply_pending(
    rig: Rig, messenger: Any
) -> None:
    graph, adapter = messenger
    pipeline = rig.pipeline(adapter, Channel.MESSENGER)
    await pipeline.process(message(FB.user_id, kind=InboundKind.START, channel=Channel.MESSENGER))
    assert texts(graph) == ["Bạn gửi gì?"]
    graph.fail_next("outside_window")  # e.g. the person's clock and Meta's disagree
    await queue_reply(rig.store, FB, "Kết quả xét duyệt")
    await pipeline.deliver(FB)
    assert len(graph.sends) == 2 and texts(graph) == ["Bạn gửi gì?"]
    sending = await rig.store.outbox_claim(FB, "", 0)
    assert sending is not None and sending.deferral is not None
    assert sending.deferral.reason == DeferReason.WINDOW.value
    assert "24 giờ" in sending.deferral.error
    assert await pipeline.recover() == 0
    await pipeline.process(message(FB.user_id, "một", channel=Channel.MESSENGER))
    assert texts(graph) == ["Bạn gửi gì?", "Kết quả xét duyệt", "Đã nhận: một", "Bạn gửi gì?"]


async def test_an_organiser_action_does_not_open_the_window(rig: Rig, messenger: Any) -> None:
    graph, adapter = messenger
    pipeline = rig.pipeline(adapter, Channel.MESSENGER)
    long_ago = datetime.now(UTC) - timedelta(hours=30)
    await rig.records.touch(FB, long_ago, None)
    approval = Inbound(
        "thu", Channel.MESSENGER, FB.user_id, InboundKind.SYSTEM, "review:1",
        datetime.now(UTC), payload="approve", data=(("text", "Hồ sơ của bạn đã được duyệt."),),
    )
    await pipeline.process(approval)
    assert graph.sends == []  # still outside the window: the approval waits
    async with rig.db.sessions() as session:  # type: ignore[attr-defined]
        last = await session.scalar(
            select(ChannelIdentity.last_inbound_at).where(ChannelIdentity.user_id == FB.user_id)
        )
    assert last is not None and abs((last - long_ago).total_seconds()) < 1
    await pipeline.process(message(FB.user_id, "chào", channel=Channel.MESSENGER))
    assert texts(graph)[0] == "Hồ sơ của bạn đã được duyệt."


async def test_the_last_inbound_time_is_written_at_most_once_a_minute(
    rig: Rig, messenger: Any
) -> None:
    _, adapter = messenger
    pipeline = rig.pipeline(adapter, Channel.MESSENGER)
    written: list[datetime] = []
    real = rig.records.touch

    async def counting(key: ConversationKey, at: datetime, ref: str | None) -> None:
        written.append(at)
        await real(key, at, ref)

    rig.records.touch = counting  # type: ignore[method-assign]
    start = datetime.now(UTC) - timedelta(minutes=5)
    for seconds in (0, 10, 50, 70, 75):
        at = start + timedelta(seconds=seconds)
        await pipeline.process(message(FB.user_id, f"t{seconds}", channel=Channel.MESSENGER, at=at))
    assert written == [start, start + timedelta(seconds=70)]  # not one transaction per message
