"""Final failures leave the outbox only once recorded where organisers see them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bots.records.models import ChannelIdentity, NotificationKind, OrganiserNotification
from flows.vocab import Channel, ConversationKey, InboundKind
from tests.delivery.conftest import Rig, message, queue_reply

FB = ConversationKey("thu", Channel.MESSENGER, "5551234")
TG = ConversationKey("thu", Channel.TELEGRAM, "700000001")


async def notifications(rig: Rig) -> list[OrganiserNotification]:
    async with rig.db.sessions() as session:  # type: ignore[attr-defined]
        query = select(OrganiserNotification).order_by(OrganiserNotification.id)
        return list(await session.scalars(query))


async def participant_of(rig: Rig, key: ConversationKey) -> int:
    async with rig.db.sessions() as session:  # type: ignore[attr-defined]
        found = await session.scalar(
            select(ChannelIdentity.participant_id).where(ChannelIdentity.user_id == key.user_id)
        )
    assert found is not None
    return int(found)


@pytest.mark.parametrize(
    ("error", "why"),
    [
        ("unreachable", "người nhận đã chặn"),
        ("invalid_token", "cấu hình kênh cần được sửa"),
        ("bad_request", "nền tảng từ chối nội dung"),
    ],
)
async def test_a_final_failure_is_recorded_for_organisers_and_the_next_reply_goes_on(
    rig: Rig, messenger: Any, error: str, why: str
) -> None:
    graph, adapter = messenger
    pipeline = rig.pipeline(adapter, Channel.MESSENGER)
    await pipeline.process(message(FB.user_id, kind=InboundKind.START, channel=Channel.MESSENGER))
    graph.fail_next(error)
    await queue_reply(rig.store, FB, "Chứng nhận số 0042 của bạn", "Cảm ơn bạn đã tham gia!")
    await pipeline.deliver(FB)
    # Refused for good: not retried, removed, and the one after it still delivered.
    assert [m["text"] for m in graph.messages] == ["Bạn gửi gì?", "Cảm ơn bạn đã tham gia!"]
    assert len(graph.sends) == 3
    assert (await rig.store.outbox_claim(FB, "", 0)).items == ()  # type: ignore[union-attr]
    [note] = await notifications(rig)
    assert note.kind is NotificationKind.UNDELIVERED
    assert note.district == "thu"
    assert note.participant_id == await participant_of(rig, FB)  # on the person's page
    assert note.handled_at is None
    assert "Messenger" in note.text and why in note.text
    assert "«Chứng nhận số 0042 của bạn»" in note.text
    assert "fake-page-token" not in note.text


async def test_a_blocked_telegram_user_is_recorded_once_per_message(
    rig: Rig, telegram: Any
) -> None:
    tg, adapter, _ = telegram
    pipeline = rig.pipeline(adapter, Channel.TELEGRAM)
    tg.fail_next(403, times=3)
    await pipeline.process(message(TG.user_id, kind=InboundKind.START, channel=Channel.TELEGRAM))
    await pipeline.process(message(TG.user_id, "một", channel=Channel.TELEGRAM))
    assert tg.sent("sendMessage") == []
    notes = await notifications(rig)
    assert [n.text.split("«")[1].split("»")[0] for n in notes] == [
        "Bạn gửi gì?", "Đã nhận: một", "Bạn gửi gì?"
    ]
    assert all("Telegram" in n.text and "bot was blocked" in n.text for n in notes)


async def test_a_failure_that_cannot_be_recorded_stays_in_the_outbox(
    rig: Rig, messenger: Any
) -> None:
    graph, adapter = messenger
    pipeline = rig.pipeline(adapter, Channel.MESSENGER)
    await pipeline.process(message(FB.user_id, kind=InboundKind.START, channel=Channel.MESSENGER))
    real = rig.records.undelivered

    async def broken(*args: Any) -> None:
        raise OSError("database is locked")

    rig.records.undelivered = broken  # type: ignore[method-assign]
    graph.fail_next("unreachable")
    await queue_reply(rig.store, FB, "Chứng nhận")
    await pipeline.deliver(FB)
    sending = await rig.store.outbox_claim(FB, "", 0)
    assert sending is not None and [i.seq for i in sending.items] != []  # never dropped
    assert sending.deferral is not None and sending.deferral.attempts == 1
    rig.records.undelivered = real  # type: ignore[method-assign]
    graph.fail_next("unreachable")
    await pipeline.process(message(FB.user_id, "một", channel=Channel.MESSENGER))
    assert len(await notifications(rig)) == 1
    assert [m["text"] for m in graph.messages] == ["Bạn gửi gì?", "Đã nhận: một", "Bạn gửi gì?"]
