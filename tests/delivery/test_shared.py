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


async def test_a_district_served_by_another_process_is_left_to_it(
    rig: Rig, open_state: Open
) -> None:
    """Regression: a `loa serve` whose Telegram bots do not include a district's (that district
    runs the PTB bridge on the same Redis) failed that district's replies for good as a
    configuration error when its sweep found them; now it leaves them to the process that has
    the district's bot."""
    from bots.channels import ByDistrict

    other = ConversationKey("khac", Channel.TELEGRAM, "700000002")
    ours, theirs = Recorder(), Recorder()
    serve = rig.pipeline(ByDistrict(Channel.TELEGRAM, {"thu": ours}), Channel.TELEGRAM,
                         exclusive=False)
    bridge = rig.pipeline(ByDistrict(Channel.TELEGRAM, {"khac": theirs}), Channel.TELEGRAM,
                          store=await open_state(), exclusive=False)
    await queue_reply(rig.store, other, "Chào bạn ở đơn vị khác")
    await queue_reply(rig.store, KEY, "Chào bạn")
    assert await serve.deliver(other) == 0
    assert await serve.deliver(KEY) == 1
    sending = await rig.store.outbox_claim(other, "", 0)
    assert sending is not None and [i.seq for i in sending.items] != []  # still waiting
    await bridge.recover()
    await eventually(lambda: len(theirs.sent) == 1)
    await bridge.idle()
    assert theirs.texts() == ["Chào bạn ở đơn vị khác"]
    assert ours.texts() == ["Chào bạn"]
