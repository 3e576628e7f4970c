"""Two processes sharing one store never send a conversation's replies twice or out of order."""

from __future__ import annotations

import asyncio

from flows.vocab import Channel, ConversationKey, Outbound
from tests.bots.conftest import Recorder
from tests.delivery.conftest import Open, Rig, eventually, queue_reply

KEY = ConversationKey("thu", Channel.TELEGRAM, "700000001")


class Slow(Recorder):
    """A platform answering after 200 ms (what the soak benchmark uses too)."""

    async def send(self, key: ConversationKey, message: Outbound) -> None:
        await asyncio.sleep(0.2)
        await super().send(key, message)


async def test_two_senders_share_the_work_without_duplicates(rig: Rig, open_state: Open) -> None:
    platform = Slow()
    first = rig.pipeline(platform, Channel.TELEGRAM, exclusive=False)
    second = rig.pipeline(platform, Channel.TELEGRAM, store=await open_state(), exclusive=False)
    await queue_reply(rig.store, KEY, "một", "hai", "ba")
    sent = await asyncio.gather(first.deliver(KEY), second.deliver(KEY))
    assert sorted(sent) == [0, 3]  # one sender took the lease; the other stood back
    # While the first still sends, the other's periodic sweep must not send the same again.
    await queue_reply(rig.store, KEY, "bốn", "năm")
    running = asyncio.ensure_future(first.deliver(KEY))
    await asyncio.sleep(0.05)
    await second.recover()
    await running
    await eventually(lambda: len(platform.sent) == 5)
    for pipeline in (first, second):
        await pipeline.idle()
    await asyncio.sleep(1.2)  # the stood-back sender's second look (busy_retry) finds nothing
    for pipeline in (first, second):
        await pipeline.idle()
    assert platform.texts() == ["một", "hai", "ba", "bốn", "năm"]
