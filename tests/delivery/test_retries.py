"""Retry later, refreshed auth, timeouts and order, against the fake platform servers."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from adapters.base import AuthExpired
from bots.delivery import DeferReason, DeliveryPolicy
from flows.vocab import Channel, ConversationKey, InboundKind, Outbound
from tests.bots.conftest import Recorder
from tests.delivery.conftest import Rig, eventually, message, queue_reply

TG = ConversationKey("thu", Channel.TELEGRAM, "700000001")
FB = ConversationKey("thu", Channel.MESSENGER, "5551234")


def sent_texts(tg: Any) -> list[str]:
    return [str(p["text"]) for p in tg.sent("sendMessage")]


async def test_429_with_retry_after_is_delivered_once_after_the_wait(
    rig: Rig, telegram: Any
) -> None:
    tg, adapter, transport = telegram
    pipeline = rig.pipeline(adapter, Channel.TELEGRAM)
    tg.fail_next(429, retry_after=1)
    await pipeline.process(message(TG.user_id, kind=InboundKind.START, channel=Channel.TELEGRAM))
    # Refused once; waiting longer than max_wait, so deferred durably with its attempt count.
    assert sent_texts(tg) == []
    sending = await rig.store.outbox_claim(TG, "", 0)
    assert sending is not None and sending.deferral is not None
    deferral = sending.deferral
    assert (deferral.attempts, deferral.reason) == (1, DeferReason.WAIT.value)
    assert deferral.seq == sending.items[0].seq
    refused_at = transport.log[0][0]
    assert transport.log[0][1:3] == ("sendMessage", False)

    await eventually(lambda: len(sent_texts(tg)) == 1)
    await pipeline.idle()
    assert sent_texts(tg) == ["Bạn gửi gì?"]  # exactly once
    delivered_at = next(t for t, _, ok, _ in transport.log if ok)
    assert delivered_at - refused_at >= 1.0  # not before retry_after
    assert (await rig.store.outbox_claim(TG, "", 0)).items == ()  # type: ignore[union-attr]


async def test_5xx_is_retried_with_backoff_until_delivered_once(rig: Rig, telegram: Any) -> None:
    tg, adapter, _ = telegram
    pipeline = rig.pipeline(adapter, Channel.TELEGRAM)
    tg.fail_next(500, times=4)
    await pipeline.process(message(TG.user_id, kind=InboundKind.START, channel=Channel.TELEGRAM))
    await eventually(lambda: len(sent_texts(tg)) == 1)
    await pipeline.idle()
    refused = [r for r in tg.requests if r.method == "sendMessage"]
    assert len(refused) == 5  # four refusals, then the one delivery
    assert sent_texts(tg) == ["Bạn gửi gì?"]


async def test_order_per_recipient_survives_retries(rig: Rig, telegram: Any) -> None:
    tg, adapter, _ = telegram
    pipeline = rig.pipeline(adapter, Channel.TELEGRAM)
    await pipeline.process(message(TG.user_id, kind=InboundKind.START, channel=Channel.TELEGRAM))
    tg.fail_next(429, retry_after=1)
    await pipeline.process(message(TG.user_id, "một", channel=Channel.TELEGRAM))
    # The person writes again while "Đã nhận: một" waits: nothing overtakes it.
    await pipeline.process(message(TG.user_id, "hai", channel=Channel.TELEGRAM))
    await queue_reply(rig.store, TG, "Tin của Ban Tổ chức")
    await pipeline.deliver(TG)
    assert sent_texts(tg) == ["Bạn gửi gì?"]
    await eventually(lambda: len(sent_texts(tg)) == 6)
    await pipeline.idle()
    assert sent_texts(tg) == [
        "Bạn gửi gì?",
        "Đã nhận: một",
        "Bạn gửi gì?",
        "Đã nhận: hai",
        "Bạn gửi gì?",
        "Tin của Ban Tổ chức",
    ]


async def test_a_timed_out_send_is_sent_again_at_least_once(rig: Rig, messenger: Any) -> None:
    graph, adapter = messenger
    pipeline = rig.pipeline(adapter, Channel.MESSENGER)
    graph.delay_next(1.5)  # longer than the adapter's 0.5 s timeout; Meta still delivers it
    await pipeline.process(message(FB.user_id, kind=InboundKind.START, channel=Channel.MESSENGER))
    await pipeline.process(message(FB.user_id, "một", channel=Channel.MESSENGER))
    await eventually(lambda: len(graph.messages) >= 4)
    await pipeline.idle()
    texts = [m.get("text") for m in graph.messages]
    # The timed-out copy arrived late *and* the retry went out: at-least-once, never lost,
    # and the reply after it was not sent before the retry succeeded.
    assert texts.count("Bạn gửi gì?") == 3
    assert texts.index("Đã nhận: một") > 0
    assert all(m["metadata"].startswith("outbox:") for m in graph.messages)


async def test_refused_credentials_are_retried_soon(rig: Rig) -> None:
    class Expired(Recorder):
        refusals = 1

        async def send(self, key: ConversationKey, message: Outbound) -> None:
            if self.refusals:
                self.refusals -= 1
                raise AuthExpired("Zalo từ chối token (mã -216)")
            await super().send(key, message)

    adapter = Expired()
    policy = DeliveryPolicy(auth_delay=0.3, max_wait=0.1, jitter=0)
    pipeline = rig.pipeline(adapter, Channel.TELEGRAM, delivery=policy)
    await pipeline.process(message(TG.user_id, kind=InboundKind.START, channel=Channel.TELEGRAM))
    sending = await rig.store.outbox_claim(TG, "", 0)
    assert sending is not None and sending.deferral is not None
    assert sending.deferral.reason == DeferReason.AUTH.value
    assert math.isfinite(sending.deferral.not_before)
    assert sending.deferral.not_before - time.time() <= 0.3
    await eventually(lambda: adapter.texts() == ["Bạn gửi gì?"])


async def test_a_deferred_reply_survives_the_process_and_another_sends_it(
    rig: Rig, telegram: Any, open_state: Any
) -> None:
    tg, adapter, _ = telegram
    first = rig.pipeline(adapter, Channel.TELEGRAM)
    tg.fail_next(429, retry_after=1)
    await first.process(message(TG.user_id, kind=InboundKind.START, channel=Channel.TELEGRAM))
    first.cancel_timers()  # the process dies with its wake-up timer
    await first.idle()
    second = rig.pipeline(adapter, Channel.TELEGRAM, store=await open_state())
    assert await second.recover() == 0  # deferred, and not due yet
    sending = await second.store.outbox_claim(TG, "", 0)  # type: ignore[attr-defined]
    assert sending is not None and sending.deferral is not None
    await asyncio.sleep(max(0.0, sending.deferral.not_before - time.time()) + 0.05)
    assert await second.recover() == 1  # the periodic sweep finds it once due
    await eventually(lambda: len(sent_texts(tg)) == 1)
    await second.idle()
    assert sent_texts(tg) == ["Bạn gửi gì?"]


async def test_a_multi_part_reply_resumes_after_the_parts_delivered(
    rig: Rig, telegram: Any
) -> None:
    """Regression: a reply that takes two calls (the image, then its long text) failing at the
    second part was sent again whole on retry, so the person got the image twice."""
    tg, adapter, _ = telegram
    pipeline = rig.pipeline(adapter, Channel.TELEGRAM)
    long_text = "Hướng dẫn kích hoạt VNeID. " * 60  # beyond a caption: image, then text
    tg.fail_next(429, retry_after=1, methods=("sendMessage",))
    seqs = await queue_reply(
        rig.store, TG, Outbound(long_text, image="https://example.vn/mau.png")
    )
    await pipeline.deliver(TG)
    assert [p["photo"] for p in tg.sent("sendPhoto")] == ["https://example.vn/mau.png"]
    sending = await rig.store.outbox_claim(TG, "", 0)
    assert sending is not None and sending.deferral is not None
    assert sending.deferral.seq == seqs[0]
    assert DeferReason.of(sending.deferral.reason) is DeferReason.WAIT

    await eventually(lambda: len(sent_texts(tg)) == 1)
    await pipeline.idle()
    assert len(tg.sent("sendPhoto")) == 1  # the image was not sent again
    assert sent_texts(tg) == [long_text]
