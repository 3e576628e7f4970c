"""Every recorded webhook body in tests/fixtures/, posted with its recorded signature through the
real server: what is conversation input is stored, processed and answered on the platform;
receipts and edits are acknowledged and leave nothing behind; media are fetched and stored."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bots.records.models import ChannelIdentity, NotificationKind, OrganiserNotification
from flows.vocab import Channel

from .conftest import FIXTURES, HEADERS, Server, fixture_bytes, png, wait_until

# fixture → (inbounds it holds, a reply expected)
MESSENGER = {
    "messenger_text.json": (1, True),
    "messenger_quick_reply.json": (1, True),
    "messenger_postback_button.json": (1, True),
    "messenger_postback_get_started_referral.json": (1, True),
    "messenger_referral_existing_thread.json": (1, True),
    "messenger_image.json": (1, True),
    "messenger_multi_image.json": (3, True),
    "messenger_file.json": (1, True),
    "messenger_like_sticker.json": (1, True),
    "messenger_batch_two_users.json": (2, True),
    "messenger_delivery_read.json": (0, False),
    "messenger_echo.json": (0, False),  # the bot's own echo (metadata outbox:…)
}
ZALO = {
    "zalo_follow.json": (1, True),
    "zalo_user_send_text.json": (1, True),
    "zalo_user_send_text_query_button.json": (1, True),
    "zalo_user_send_image.json": (1, True),
    "zalo_user_send_sticker.json": (1, True),
    "zalo_user_send_file.json": (1, True),
    "zalo_user_submit_info.json": (1, True),
    "zalo_user_seen_message.json": (0, False),
}
ZALOBOT = {
    "zalobot_text.json": (1, True),
    "zalobot_text_wrapped.json": (1, True),
    "zalobot_image.json": (1, True),
    "zalobot_sticker.json": (1, True),
    "zalobot_unsupported.json": (1, True),
}
TELEGRAM = {
    "telegram_start_deeplink.json": (1, True),
    "telegram_text.json": (1, True),
    "telegram_callback_query.json": (1, True),
    "telegram_photo.json": (1, True),
    "telegram_album_part1.json": (1, True),
    "telegram_album_part2.json": (1, True),
    "telegram_document_image.json": (1, True),
    "telegram_edited_message.json": (0, False),
    "telegram_my_chat_member_blocked.json": (0, False),
}


def test_every_fixture_is_covered() -> None:
    listed = {*MESSENGER, *ZALO, *ZALOBOT, *TELEGRAM, "zalo_oa_send_text_echo.json"}
    present = {p.name for p in FIXTURES.glob("*.json")} - {"signatures.json"}
    assert present == listed


FIXTURE_ERA = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # when the fixtures were "sent"


def _fixture_clock(server: Server) -> None:
    """The fixtures carry March 2026 timestamps: seen from today, Messenger's 24-hour and
    Zalo's 48-hour windows are long closed and every reply would (rightly) wait. The pipeline's
    clock is set to the fixtures' day so replies go out."""
    started = time.monotonic()
    server.pipeline.clock = lambda: FIXTURE_ERA + timedelta(seconds=time.monotonic() - started)


def _replies(server: Server, channel: Channel, user: str) -> int:
    p = server.platforms
    if channel is Channel.MESSENGER:
        return sum(1 for recipient, _ in p.graph.delivered if recipient == user)
    if channel is Channel.ZALO:
        return sum(
            1
            for r in p.zalo.sends
            if (r.body or {}).get("recipient", {}).get("user_id") == user
        )
    if channel is Channel.ZALOBOT:
        return sum(1 for _, body in p.zalobot.calls if body.get("chat_id") == user)
    return sum(1 for body in p.telegram.sent() if str(body.get("chat_id")) == user)


USERS = {
    Channel.MESSENGER: "2222222222222222",
    Channel.ZALO: "3333333333333333333",
    Channel.ZALOBOT: "0f0f0f0f0f0f0f0f0f01",
    Channel.TELEGRAM: "7000000001",
}


async def _post(server: Server, channel: Channel, name: str) -> Any:
    body = fixture_bytes(name)
    headers = {"Content-Type": "application/json", **HEADERS[name]}
    path = {
        Channel.MESSENGER: "/webhooks/messenger",
        Channel.ZALO: "/webhooks/zalo",
        Channel.ZALOBOT: "/webhooks/zalobot/tan-phu",
        Channel.TELEGRAM: "/webhooks/telegram/tan-phu",
    }[channel]
    return await server.client.post(path, data=body, headers=headers)


def _telegram_files(server: Server) -> None:
    for path in FIXTURES.glob("telegram_*.json"):
        message = json.loads(path.read_text()).get("message") or {}
        for item in [*(message.get("photo") or [])[-1:], message.get("document") or {}]:
            if item.get("file_id"):
                server.platforms.telegram.add_file(item["file_id"], png(item["file_id"]))


@pytest.mark.parametrize(
    ("channel", "table"),
    [
        (Channel.MESSENGER, MESSENGER),
        (Channel.ZALO, ZALO),
        (Channel.ZALOBOT, ZALOBOT),
        (Channel.TELEGRAM, TELEGRAM),
    ],
    ids=["messenger", "zalo", "zalobot", "telegram"],
)
async def test_fixtures_signed_through_the_server(
    server: Server, channel: Channel, table: dict[str, tuple[int, bool]]
) -> None:
    _telegram_files(server)
    _fixture_clock(server)
    user = USERS[channel]
    files = server.runtime.settings.files_dir
    for name, (inbounds, answered) in table.items():
        processed = server.pipeline.processed
        replies = _replies(server, channel, user)
        stored = len(list(files.rglob("*"))) if files.exists() else 0
        response = await _post(server, channel, name)
        assert response.status == 200, name
        await server.settle()
        assert server.pipeline.processed - processed == inbounds, name
        if answered:
            await wait_until(lambda n=replies: _replies(server, channel, user) > n)
        else:
            assert _replies(server, channel, user) == replies, name
        if "image" in name or "photo" in name or "album" in name:
            assert len(list(files.rglob("*"))) > stored, f"{name}: no file stored"
        # a retried delivery of the same body is acknowledged and processed no more
        again = await _post(server, channel, name)
        assert again.status == 200
        await server.settle()
        assert server.pipeline.processed - processed == inbounds, f"{name} (retried)"

    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        identities = (await session.scalars(select(ChannelIdentity))).all()
    assert {(i.channel, i.user_id) for i in identities} >= {(channel, user)}
    assert all(i.district == "tan-phu" for i in identities)
    if channel is Channel.MESSENGER:
        assert {i.user_id for i in identities} == {user, "2222222222222233"}  # batch of two
    if channel is Channel.TELEGRAM:
        await wait_until(lambda: server.platforms.telegram.sent("answerCallbackQuery"))
        answered = server.platforms.telegram.sent("answerCallbackQuery")
        assert [a["callback_query_id"] for a in answered] == ["4382000000000000001"]
        got = server.platforms.telegram.file_requests
        assert len(got) == 4  # photo, two album parts, the image sent as a file


async def test_zalo_echo_fixture_pauses_the_bot(server: Server) -> None:
    """`zalo_oa_send_text_echo.json` is a message the OA sent that Loa did not send (no record
    of its id): a person answered from the OA chat, so the bot stays silent for that user."""
    user = USERS[Channel.ZALO]
    _fixture_clock(server)
    first = await _post(server, Channel.ZALO, "zalo_user_send_text.json")
    assert first.status == 200
    await wait_until(lambda: _replies(server, Channel.ZALO, user) > 0)
    echo = await _post(server, Channel.ZALO, "zalo_oa_send_text_echo.json")
    assert echo.status == 200

    async def paused() -> bool:
        async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
            row = await session.scalar(
                select(ChannelIdentity).where(ChannelIdentity.user_id == user)
            )
            return bool(row is not None and row.paused)

    await wait_until(paused)
    replies = _replies(server, Channel.ZALO, user)
    await _post(server, Channel.ZALO, "zalo_user_send_text_query_button.json")
    await server.settle()
    assert _replies(server, Channel.ZALO, user) == replies  # silent while a person talks
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        notices = (
            await session.scalars(
                select(OrganiserNotification).where(
                    OrganiserNotification.kind == NotificationKind.HANDOVER
                )
            )
        ).all()
    assert len(notices) == 1
    assert notices[0].district == "tan-phu"
    assert "Zalo OA" in notices[0].text
