"""Echoes: a message the Page/OA sent that the bot did not send means a person answered from the
Page inbox or the OA chat — the bot pauses for that user until an organiser hands back. The
echoes of the bot's own messages never pause it, even one that arrives before the send call
has returned."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from adapters.zalo import signature
from bots.console.handover import release
from bots.records.models import (
    ChannelIdentity,
    NotificationKind,
    Organiser,
    OrganiserNotification,
    OrganiserRole,
    Participant,
)
from flows.messages import RESUMED
from flows.vocab import Channel
from tests.fakes.zalo_api import FakeZaloApi

from .conftest import (
    TANPHU_OA,
    TANPHU_PAGE,
    ZALO_APP_ID,
    ZALO_APP_SECRET,
    ZALO_OA_SECRET,
    Platforms,
    Server,
    start_server,
    wait_until,
)
from .people import MessengerUser, ZaloUser

OTHER_APP = 263902037430900  # Meta's Page inbox (Business Suite) app


def _messenger_echo(psid: str, mid: str, text: str, **extra: Any) -> bytes:
    ms = int(time.time() * 1000)
    event = {
        "sender": {"id": TANPHU_PAGE},
        "recipient": {"id": psid},
        "timestamp": ms,
        "message": {"mid": mid, "is_echo": True, "text": text, **extra},
    }
    body = {"object": "page", "entry": [{"id": TANPHU_PAGE, "time": ms, "messaging": [event]}]}
    return json.dumps(body, ensure_ascii=True).encode()


def _zalo_echo(user: str, msg_id: str, text: str, admin: str | None = None) -> bytes:
    sender: dict[str, Any] = {"id": TANPHU_OA}
    if admin is not None:
        sender["admin_id"] = admin
    body = {
        "app_id": ZALO_APP_ID,
        "sender": sender,
        "recipient": {"id": user},
        "event_name": "oa_send_text",
        "message": {"text": text, "msg_id": msg_id},
        "timestamp": str(int(time.time() * 1000)),
    }
    return json.dumps(body, ensure_ascii=False).encode()


async def _identity(server: Server, channel: Channel, user: str) -> ChannelIdentity | None:
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        return await session.scalar(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == channel, ChannelIdentity.user_id == user
            )
        )


async def _paused(server: Server, channel: Channel, user: str) -> bool:
    identity = await _identity(server, channel, user)
    return bool(identity is not None and identity.paused)


async def _handover_notices(server: Server) -> list[OrganiserNotification]:
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        query = select(OrganiserNotification).where(
            OrganiserNotification.kind == NotificationKind.HANDOVER
        )
        return list((await session.scalars(query)).all())


async def _hand_back(server: Server, channel: Channel, user: str) -> None:
    """What the console's «Trao lại cho bot» does: records updated, "resume" into the inbox."""
    identity = await _identity(server, channel, user)
    assert identity is not None
    now = datetime.now(UTC)
    db = server.runtime._db
    assert db is not None
    async with db.sessions() as session, session.begin():
        organiser = Organiser(
            login="can-bo@tanphu.vn",
            password_hash="x",
            role=OrganiserRole.ORGANISER,
            org="tan-phu",
            created_at=now,
            updated_at=now,
            password_changed_at=now,
        )
        session.add(organiser)
        await session.flush()
        participant = await session.get(Participant, identity.participant_id)
        assert participant is not None
        change = await release(session, organiser, participant, now)
    for event in change.events:
        await server.pipeline.ingest(event)


async def test_messenger_human_echo_pauses_until_handed_back(server: Server) -> None:
    person = MessengerUser(server, "9300000000000001")
    await person.say("xin chào")
    # the bot's own replies come back as echoes carrying its metadata: nothing happens
    for n, message in enumerate(person.messages()):
        echo = _messenger_echo(person.psid, f"m_own_{n}", message.get("text", ""),
                               metadata=message["metadata"], app_id=999999999999999)
        assert (await server.post_messenger(echo)).status == 200
    await server.settle()
    assert not await _paused(server, Channel.MESSENGER, person.psid)

    human = _messenger_echo(person.psid, "m_human_1", "Chào em, anh là cán bộ Đoàn.",
                            app_id=OTHER_APP)
    for _ in range(3):  # Meta retries: still one pause, one notice
        assert (await server.post_messenger(human)).status == 200
    await wait_until(lambda: _paused(server, Channel.MESSENGER, person.psid))
    notices = await _handover_notices(server)
    assert len(notices) == 1 and "Hộp thư của Trang" in notices[0].text

    silent = await person.say("anh ơi em cần hỏi", expect_reply=False)
    assert silent == []  # the bot does not talk over the person

    await _hand_back(server, Channel.MESSENGER, person.psid)
    await wait_until(lambda: RESUMED in person.texts())
    reply = await person.say("menu")
    assert any("Bạn muốn làm gì?" in t for t in reply)


async def test_messenger_own_echo_before_the_send_returns(server: Server) -> None:
    """Loa recognises its echoes by their content (metadata), not by timing: an echo of an
    outbox item whose send has not even been recorded yet never pauses."""
    person = MessengerUser(server, "9300000000000002")
    await person.say("xin chào")
    early = _messenger_echo(person.psid, "m_early", "…", metadata="outbox:999999")
    assert (await server.post_messenger(early)).status == 200
    await server.settle()
    assert not await _paused(server, Channel.MESSENGER, person.psid)
    assert await _handover_notices(server) == []


class EchoingZaloApi(FakeZaloApi):
    """Zalo as it behaves in the race Chatwoot describes: the echo of a message is delivered
    to the webhook before the send call that produced it has been answered."""

    client: TestClient | None = None
    forget: Callable[[], None] | None = None  # drop what the sending process remembers
    echoed = 0

    async def _message(self, request: web.Request) -> web.Response:
        response = await super()._message(request)
        reply = json.loads(response.body)  # type: ignore[arg-type]
        if self.client is not None and not reply.get("error"):
            user = reply["data"]["user_id"]
            body = _zalo_echo(user, reply["data"]["message_id"], "(echo)")
            mac = signature(ZALO_APP_ID, body, json.loads(body)["timestamp"], ZALO_OA_SECRET)
            echo = await self.client.post(
                "/webhooks/zalo", data=body, headers={"X-ZEvent-Signature": f"mac={mac}"}
            )
            assert echo.status == 200
            self.echoed += 1
        if self.forget is not None:
            self.forget()  # as if the echo had reached another process
        return response


async def test_zalo_own_echo_arriving_before_the_send_returns(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> None:
    await platforms.zalo.close()
    echoing = await EchoingZaloApi(app_id=ZALO_APP_ID, app_secret=ZALO_APP_SECRET).start()
    platforms.zalo = echoing
    try:
        server = await start_server(aiohttp_client, platforms, tmp_path)
        echoing.client = server.client
        zalo_adapter = server.channels.zalo
        echoing.forget = zalo_adapter._sent.clear  # only the database remembers the sends
        person = ZaloUser(server, "9300000000000000003")
        await person.say("#huyhieuso")
        await person.tap("Đồng ý")
        await person.say("Trần Văn Bình")
        sent = len(person.messages())
        assert sent >= 3 and echoing.echoed == sent  # every send echoed before it returned
        # let every grace period run out: the database says each echo was the bot's own
        await wait_until(lambda: not server.channels._tasks or _only_long_tasks(server))
        assert not await _paused(server, Channel.ZALO, person.user_id)
        assert await _handover_notices(server) == []
        assert await _held_echoes(server) == []  # each judged the bot's own, and forgotten
        reply = await person.say("binh.tran@gmail.com")
        assert any("đơn vị" in t or "Email" in t or "điện thoại" in t for t in reply), reply
    finally:
        await echoing.close()


def _only_long_tasks(server: Server) -> bool:
    names = {t.get_name() for t in server.channels._tasks}
    return "loa-zalo-echo" not in names  # the in-process judgements of echoes


async def _held_echoes(server: Server) -> list[str]:
    """Echoes kept in the records until judged (tests/channels/test_echo_sweep.py)."""
    later = datetime.now(UTC) + timedelta(days=1)
    return [e.message_id for e in await server.channels.state.held_echoes(Channel.ZALO, later)]


async def test_zalo_human_echo_pauses(server: Server) -> None:
    person = ZaloUser(server, "9300000000000000004")
    await person.say("xin chào")
    human = _zalo_echo(person.user_id, "zalo-human-1", "Chào bạn, mình là cán bộ Đoàn.")
    assert (await server.post_zalo(human)).status == 200
    # not yet: the message id might be of a send still in flight
    assert not await _paused(server, Channel.ZALO, person.user_id)
    await wait_until(lambda: _paused(server, Channel.ZALO, person.user_id))
    await wait_until(lambda: _no_held_echoes(server))  # judged, then forgotten
    assert await person.say("cho mình hỏi", expect_reply=False) == []
    notices = await _handover_notices(server)
    assert len(notices) == 1 and "Zalo OA" in notices[0].text


async def test_zalo_echo_typed_by_an_admin_pauses_at_once(server: Server) -> None:
    person = ZaloUser(server, "9300000000000000005")
    await person.say("xin chào")
    server.channels.zalo_grace = 60.0  # the admin_id decides; no waiting involved
    typed = _zalo_echo(person.user_id, "zalo-admin-1", "Mình hỗ trợ bạn nhé.", admin="77")
    assert (await server.post_zalo(typed)).status == 200
    await wait_until(lambda: _paused(server, Channel.ZALO, person.user_id), timeout=5)
    assert await _held_echoes(server) == []  # nothing to judge later


async def _no_held_echoes(server: Server) -> bool:
    return await _held_echoes(server) == []
