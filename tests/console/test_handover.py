"""Hand-over: take a conversation, write to the person, hand back; automatic hand-back."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from sqlalchemy import select

from bots.console.app import console_tick, mount_console
from bots.console.handover import release_stale_handovers, send_through_inbox
from bots.records.models import AuditEntry, Handover, OrganiserNotification
from flows.events import HandoverRequested
from flows.vocab import InboundKind, NoticeKind
from tests.console.conftest import AiohttpClient, Client, World, quick_sign_in


async def post(client: Client, world: World, csrf: str, who: str, action: str,
               **fields: str) -> tuple[int, str]:
    response = await client.post(f"/admin/participants/{world.participants[who]}/{action}",
                                 data={"csrf": csrf, **fields})
    return response.status, await response.text()


async def test_take_message_release(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    status, html = await post(client, world, csrf, "an", "take")
    assert status == 200 and "Bạn đang trò chuyện trực tiếp" in html
    identity = await world.identity("an")
    assert identity.paused
    key = world.keys["an"]
    pause = world.notified[-1]
    assert pause.kind is InboundKind.SYSTEM and pause.payload == "pause"
    assert (pause.district, pause.channel, pause.user_id) == (key.district, key.channel,
                                                              key.user_id)
    async with world.db.reads() as session:
        handover = await session.scalar(select(Handover))
    assert handover is not None and handover.organiser_id == world.organisers["org_a"]
    assert pause.message_id == f"handover:{handover.id}:take"

    status, html = await post(client, world, csrf, "an", "message",
                              text="Chào An, mình là cán bộ Quận Đoàn, bạn cần hỗ trợ gì?")
    assert status == 200 and "Đã gửi tin nhắn." in html
    assert len(world.sent) == 1
    sent_key, outbound = world.sent[0]
    assert sent_key == key
    assert outbound.text == "Chào An, mình là cán bộ Quận Đoàn, bạn cần hỗ trợ gì?"
    assert outbound.notice is NoticeKind.SYSTEM

    status, html = await post(client, world, csrf, "an", "release")
    assert status == 200 and "Đã trả cuộc trò chuyện lại" in html
    assert not (await world.identity("an")).paused
    resume = world.notified[-1]
    assert resume.payload == "resume" and resume.user_id == key.user_id
    async with world.db.reads() as session:
        handover = await session.scalar(select(Handover))
        actions = [a.action for a in (await session.scalars(
            select(AuditEntry).where(AuditEntry.actor == f"organiser:{world.organisers['org_a']}")
            .order_by(AuditEntry.id))).all()]
    assert handover is not None
    assert handover.released_by == f"organiser:{world.organisers['org_a']}"
    handover_actions = [a for a in actions if a.startswith("handover")]
    assert handover_actions == ["handover_taken", "handover_message", "handover_released"]


async def test_no_message_without_taking_over(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    status, html = await post(client, world, csrf, "an", "message", text="Chào bạn")
    assert status == 409
    assert "Nhận hỗ trợ trực tiếp" in html
    assert world.sent == []


async def test_without_a_send_function_messages_are_refused(
    world: World, aiohttp_client: AiohttpClient
) -> None:
    app = web.Application()
    mount_console(app, world.deps(send=None))
    client = await aiohttp_client(app)
    csrf = await quick_sign_in(client, world, "org_a")
    await post(client, world, csrf, "an", "take")
    page = await (await client.get(f"/admin/participants/{world.participants['an']}")).text()
    assert "chưa bật nhắn tin" in page and 'name="text"' not in page
    status, _ = await post(client, world, csrf, "an", "message", text="Chào")
    assert status == 409


async def test_auto_release_after_the_quiet_period(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    await post(client, world, csrf, "an", "take")
    world.clock.advance(hours=1, minutes=30)
    await post(client, world, csrf, "an", "message", text="Bạn còn đó không?")
    world.clock.advance(hours=1)  # 2 h 30 since taking, 1 h since the last message
    assert await release_stale_handovers(world.db, world.notify, world.clock()) == 0
    assert (await world.identity("an")).paused
    world.clock.advance(hours=1, seconds=1)
    assert await release_stale_handovers(world.db, world.notify, world.clock()) == 1
    assert not (await world.identity("an")).paused
    assert world.notified[-1].payload == "resume"
    assert await release_stale_handovers(world.db, world.notify, world.clock()) == 0
    async with world.db.reads() as session:
        handover = await session.scalar(select(Handover))
        row = await session.scalar(select(AuditEntry).where(AuditEntry.actor == "system"))
    assert handover is not None and handover.released_by == "timeout"
    assert row is not None and row.action == "handover_released"
    assert row.detail["reason"] == "timeout"


async def test_the_timeout_is_configurable(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    await post(client, world, csrf, "an", "take")
    world.clock.advance(minutes=31)
    await console_tick(world.deps(handover_timeout=timedelta(minutes=30)))
    assert not (await world.identity("an")).paused
    assert world.notified[-1].payload == "resume"


async def test_a_persons_request_for_a_human(client: Client, world: World) -> None:
    await world.say("binh", "binh-9", HandoverRequested("Cần hỗ trợ đăng ký VNeID"))
    assert (await world.identity("binh")).paused
    csrf = await quick_sign_in(client, world, "org_a")
    queue = await (await client.get("/admin/")).text()
    assert "1 người đang chờ cán bộ" in queue
    listing = await (await client.get("/admin/handovers")).text()
    assert "Trần Thị Bình" in listing and "Đang chờ cán bộ" in listing
    page = await (await client.get(f"/admin/participants/{world.participants['binh']}")).text()
    assert "Cần hỗ trợ đăng ký VNeID" in page and "đang chờ gặp cán bộ" in page
    status, _ = await post(client, world, csrf, "binh", "take")
    assert status == 200
    async with world.db.reads() as session:
        note = await session.scalar(select(OrganiserNotification))
    assert note is not None and note.handled_at == world.clock()
    status, _ = await post(client, world, csrf, "binh", "release")
    assert status == 200 and not (await world.identity("binh")).paused
    assert [e.payload for e in world.notified] == ["pause", "resume"]


async def test_releasing_a_conversation_the_bot_has_is_refused(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    status, html = await post(client, world, csrf, "an", "release")
    assert status == 409 and "Trợ lý tự động đang trả lời người này rồi." in html
    assert world.notified == []


async def test_messages_can_go_through_the_inbox(
    world: World, aiohttp_client: AiohttpClient
) -> None:
    """The runtime may wire `send` as a SYSTEM "say" event; `db` and `files` may be functions
    (the console is mounted before the runtime has opened the database)."""
    app = web.Application()
    mount_console(app, world.deps(db=lambda: world.db, files=lambda: world.files,
                                  send=send_through_inbox(world.notify, world.clock)))
    client = await aiohttp_client(app)
    csrf = await quick_sign_in(client, world, "org_a")
    await post(client, world, csrf, "binh", "take")
    status, _ = await post(client, world, csrf, "binh", "message", text="Bạn gửi lại ảnh nhé")
    assert status == 200
    say = world.notified[-1]
    assert say.kind is InboundKind.SYSTEM and say.payload == "say"
    assert dict(say.data) == {"text": "Bạn gửi lại ảnh nhé"}
    assert say.user_id == world.keys["binh"].user_id and say.channel is world.keys["binh"].channel
    assert say.message_id.startswith("console:say:")
