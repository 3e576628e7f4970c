"""The whole loop with the real engine and pipeline: a person registers and submits on
Telegram; an organiser rejects one item in the console; the person is told why in their chat
and taken back to that step; what they send again returns the same submission to the queue;
approving it tells them so."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from bots.console.app import mount_console
from bots.pipeline import Pipeline
from bots.ratelimit import Buckets, Grant
from bots.records import Records
from bots.runtime import SqlRecords
from bots.state import open_store
from bots.state.protocol import ConversationStore
from flows import session as session_codec
from flows.engine import Engine
from flows.vocab import Attachment, Channel, Inbound, InboundKind
from tests.bots.conftest import Recorder
from tests.console.conftest import (
    BLUE,
    GREEN,
    RED,
    AiohttpClient,
    World,
    quick_sign_in,
)

USER = "tg-duc"
_ids = itertools.count(1)


class NoLimit:
    """Telegram's one-message-a-second per chat is not what this test is about."""

    async def reserve(self, group: str, buckets: Buckets, max_wait: float) -> Grant:
        return Grant(True, 0.0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    opened = await open_store(memory=True, data_dir=tmp_path / "state")
    yield opened
    await opened.close()


def message(kind: InboundKind, text: str = "", payload: str | None = None,
            attachment: Attachment | None = None) -> Inbound:
    return Inbound(
        district="tan-phu", channel=Channel.TELEGRAM, user_id=USER, kind=kind,
        message_id=f"tg-{next(_ids)}", timestamp=datetime.now(UTC), text=text, payload=payload,
        attachments=(attachment,) if attachment else (),
    )


async def test_reject_resend_approve_through_the_engine(
    world: World, store: ConversationStore, aiohttp_client: AiohttpClient
) -> None:
    telegram = Recorder()
    records = SqlRecords(Records(world.db.sessions, world.files, reads=world.db.reads),
                         lambda: world.bundle)
    pipeline = Pipeline(store, Engine(world.bundle), session_codec, records=records,
                        adapters={Channel.TELEGRAM: telegram}, limiter=NoLimit())

    async def say(kind: InboundKind, text: str = "", **extra: object) -> list[str]:
        before = len(telegram.sent)
        await pipeline.process(message(kind, text, **extra))  # type: ignore[arg-type]
        return [m.text for _, m in telegram.sent[before:]]

    def picture(data: bytes) -> Attachment:
        return Attachment(mime="image/png", size=len(data), sha256=world.files.put(data))

    await say(InboundKind.TEXT, "xin chào")
    for answer in ("có", "Ngô Minh Đức", "Tân Quý", "duc.ngo@gmail.com", "0912 345 678"):
        await say(InboundKind.TEXT, answer)
    join = telegram.sent[-1][1].choices[0]
    replies = await say(InboundKind.CHOICE, join.title, payload=join.payload)
    assert any("Bước 1/3" in r for r in replies)
    await say(InboundKind.IMAGE, attachment=picture(RED))
    await say(InboundKind.IMAGE, attachment=picture(BLUE))
    replies = await say(InboundKind.TEXT, "Đăng ký tạm trú trực tuyến trên VNeID")
    assert any("Ban Tổ chức sẽ xét duyệt" in r for r in replies)

    # The organiser's console, whose events enter the same pipeline.
    async def notify(inbound: Inbound) -> bool:
        world.notified.append(inbound)
        return await pipeline.process(inbound)

    app = web.Application()
    mount_console(app, world.deps(notify=notify))
    client = await aiohttp_client(app)
    csrf = await quick_sign_in(client, world, "org_a")
    queue = await (await client.get("/admin/")).text()
    assert "Ngô Minh Đức" in queue
    submission_id = max(world.submissions.values()) + 1
    page = await (await client.get(f"/admin/submissions/{submission_id}")).text()
    assert "Ngô Minh Đức" in page
    world.submissions["duc"] = submission_id
    vneid = await world.item("duc", "vneid")

    before = len(telegram.sent)
    response = await client.post(f"/admin/evidence/{vneid.id}/decision", data={
        "csrf": csrf, "decision": "reject", "reason": "ảnh bị mờ, chưa đọc được số định danh"})
    assert response.status == 200
    told = [m.text for k, m in telegram.sent[before:] if k.user_id == USER]
    assert told[0] == ("Minh chứng “Bước 1/3” của bạn chưa được duyệt: ảnh bị mờ, chưa đọc được "
                       "số định danh. Bạn gửi lại giúp mình nhé.")
    assert any(t.startswith("Bước 1/3: Mở VNeID") for t in told[1:])

    # They send a sharper picture: the engine saves it and submits again at once.
    replies = await say(InboundKind.IMAGE, attachment=picture(GREEN))
    assert any("Ban Tổ chức sẽ xét duyệt" in r for r in replies)
    items = await world.items("duc")
    assert [(i.criterion, i.status.value) for i in items] == [
        ("vneid", "rejected"), ("thanh_toan", "pending"), ("dich_vu_cong", "pending"),
        ("vneid", "pending")]
    assert (await world.submission("duc")).status.value == "submitted"
    assert "Ngô Minh Đức" in await (await client.get("/admin/")).text()

    before = len(telegram.sent)
    response = await client.post(f"/admin/submissions/{submission_id}/accept-all",
                                 data={"csrf": csrf})
    assert "Bài đã được duyệt" in await response.text()
    told = [m.text for k, m in telegram.sent[before:] if k.user_id == USER]
    assert told == ["Chúc mừng bạn! Bài dự thi “Thử thách \"Công dân số\"” của bạn đã được "
                    "Ban Tổ chức duyệt.",
                    # then the name for the certificate (tests/certificates_e2e go on from here)
                    "Tên in trên giấy chứng nhận: NGÔ MINH ĐỨC — đúng chưa?"]
    assert [e.payload for e in world.notified] == ["reject", "approve"]
