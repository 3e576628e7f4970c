"""A whole registration and "Công dân số" submission over Messenger, Zalo OA, the Zalo Bot API
and Telegram, through the real server and the fake platforms: the replies the platform receives
(Vietnamese, with buttons or numbered choices), the records written, the evidence files
stored."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import select

from bots.records.models import (
    ChannelIdentity,
    EvidenceItem,
    EvidenceKind,
    Participant,
    SentMessage,
    Submission,
    SubmissionStatus,
)
from flows.vocab import Channel

from .conftest import Server
from .people import MessengerUser, TelegramUser, ZaloBotUser, ZaloUser

CONSENT = "Ban Tổ chức cần lưu họ tên"


def _nfc(texts: list[str]) -> None:
    for text in texts:
        assert unicodedata.is_normalized("NFC", text), text


async def _converse(person: Any, first: list[str], image: Any) -> list[str]:
    """From the consent question to the submission; every reply checked on the way."""
    seen = list(first)
    assert any(CONSENT in t for t in first), first
    assert person.buttons() == ["Đồng ý", "Không đồng ý"]

    reply = await person.tap("Đồng ý")
    assert any("Họ và tên của bạn" in t for t in reply), reply
    reply = await person.say("Nguyễn Thị Lan")
    assert any("đơn vị nào" in t for t in reply), reply
    reply = await person.say("hoa thanh")  # typed without diacritics
    assert any("email" in t for t in reply), reply
    reply = await person.say("lan@")
    assert any("Email chưa đúng" in t for t in reply), reply
    reply = await person.say("lan.nguyen@gmail.com")
    assert any("Số điện thoại" in t for t in reply), reply
    reply = await person.say("0912 345 678")
    joined = "\n".join(reply)
    assert "Cảm ơn Nguyễn Thị Lan, bạn đã đăng ký thành công!" in joined, reply
    assert "Bước 1/4" in joined, reply
    seen += reply
    for n, step in ((1, "Bước 2/4"), (2, "Bước 3/4"), (3, "Bước 4/4")):
        reply = await image(f"minh-chung-{n}")
        assert any(step in t for t in reply), reply
        seen += reply
    reply = await person.say("Thông báo lưu trú trên VNeID – lĩnh vực cư trú")
    assert any("Ban Tổ chức sẽ xét duyệt minh chứng" in t for t in reply), reply
    seen += reply
    _nfc(seen)
    return seen


async def _records(server: Server, channel: Channel, user: str) -> None:
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        identity = await session.scalar(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == channel, ChannelIdentity.user_id == user
            )
        )
        assert identity is not None and identity.district == "tan-phu"
        assert identity.entry_ref == "huyhieuso"
        assert not identity.paused
        participant = await session.get(Participant, identity.participant_id)
        assert participant is not None
        assert participant.name == "Nguyễn Thị Lan"
        assert participant.email == "lan.nguyen@gmail.com"
        assert participant.phone == "+84912345678"
        assert participant.profile["don_vi"] in ("hoa-thanh", "Đoàn phường Hòa Thạnh")
        assert participant.consent_given_at is not None
        submission = await session.scalar(
            select(Submission).where(Submission.participant_id == participant.id)
        )
        assert submission is not None and submission.status is SubmissionStatus.SUBMITTED
        items = (
            await session.scalars(
                select(EvidenceItem)
                .where(EvidenceItem.submission_id == submission.id)
                .order_by(EvidenceItem.id)
            )
        ).all()
    assert [i.criterion for i in items] == ["vneid", "thanh_nien_vn", "thanh_toan", "dich_vu_cong"]
    assert [i.kind for i in items] == [EvidenceKind.IMAGE] * 3 + [EvidenceKind.TEXT]
    files = server.runtime.settings.files_dir
    for item in items[:3]:
        assert item.sha256 and item.file_path
        assert (files / item.file_path).is_file()
    assert items[3].text == "Thông báo lưu trú trên VNeID – lĩnh vực cư trú"


async def test_messenger_registration_and_challenge(server: Server) -> None:
    person = MessengerUser(server, "7777000000000001")
    first = await person.start("huyhieuso")  # m.me/<page>?ref=huyhieuso, Get Started
    # Two short choices: a button template (postback buttons stay tappable in the history).
    template = server.platforms.graph.messages[-1]["attachment"]["payload"]
    assert template["template_type"] == "button"
    seen = await _converse(person, first, lambda name: person.images([name]))
    # the sample screenshot of step 1 went by URL under LOA_PUBLIC_URL
    urls = [
        m["attachment"]["payload"]["url"]
        for m in person.messages()
        if m.get("attachment", {}).get("type") == "image"
    ]
    assert len(urls) == 1 and urls[0].startswith("https://loa.example.vn/media/")
    assert all(m.get("metadata", "").startswith("outbox:") for m in person.messages())
    assert seen
    await _records(server, Channel.MESSENGER, "7777000000000001")


async def test_zalo_registration_and_challenge(server: Server) -> None:
    person = ZaloUser(server, "8888000000000000001")
    first = await person.say("#huyhieuso")  # the OA menu item / poster code
    seen = await _converse(person, first, person.image)
    images = [
        m["attachment"]["payload"]["elements"][0]["url"]
        for m in person.messages()
        if m.get("attachment", {}).get("payload", {}).get("template_type") == "media"
    ]
    assert len(images) == 1 and images[0].startswith("https://loa.example.vn/media/")
    assert seen
    await _records(server, Channel.ZALO, "8888000000000000001")
    # every message id Zalo returned is recorded, so their echoes are known as the bot's
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        sent = (
            await session.scalars(
                select(SentMessage).where(SentMessage.user_id == "8888000000000000001")
            )
        ).all()
    assert len(sent) == len(person.messages())
    assert {s.district for s in sent} == {"tan-phu"}


async def test_telegram_registration_and_challenge(server: Server) -> None:
    person = TelegramUser(server, 7100000001)
    first = await person.start("huyhieuso")  # t.me/<bot>?start=huyhieuso
    seen = await _converse(person, first, person.photo)
    # the sample screenshot is uploaded from disk (no public URL needed)
    uploads = server.platforms.telegram.uploads
    assert len(uploads) == 1 and uploads[0][0] == "sendPhoto"
    sample = server.runtime.settings.config.parent / "media" / "mau-vneid.png"
    assert uploads[0][1].data == sample.read_bytes()
    keyboard = [m for m in person.messages() if "keyboard" in (m.get("reply_markup") or {})]
    assert keyboard, "choices come as a reply keyboard"
    assert seen
    await _records(server, Channel.TELEGRAM, "7100000001")


async def test_zalobot_registration_and_challenge(server: Server) -> None:
    person = ZaloBotUser(server, "0f0f0f0f0f0f0f0f0f01")
    first = await person.say("#huyhieuso")  # the poster code: the Bot API has no deep link
    # No buttons on the Zalo Bot API: the choices are a numbered list the person answers with
    # a digit (`tap` sends "1").
    assert "1. Đồng ý\n2. Không đồng ý" in first[-1], first
    assert "gõ số thứ tự" in first[-1]
    seen = await _converse(person, first, person.image)
    calls = person.calls()
    assert {method for method, _ in calls} == {"sendMessage", "sendPhoto"}
    assert not any("reply_markup" in body or "buttons" in body for _, body in calls)
    # the sample screenshot of step 1 goes by URL, with the step's text as its caption
    photos = [body for method, body in calls if method == "sendPhoto"]
    assert len(photos) == 1 and photos[0]["photo"].startswith("https://loa.example.vn/media/")
    assert "Bước 1/4" in photos[0]["caption"]
    assert all(0 < len(t) <= 2000 for t in person.texts())
    assert seen
    await _records(server, Channel.ZALOBOT, "0f0f0f0f0f0f0f0f0f01")


async def test_zalobot_documented_envelope_redelivery_and_decomposed_text(server: Server) -> None:
    """What the Zalo Bot API may do that the other channels do not: the documented
    `{"ok": true, "result": ...}` envelope, a body delivered twice (no update id; the message id
    is the key), and a choice answered by its title instead of its number."""
    person = ZaloBotUser(server, "0f0f0f0f0f0f0f0f0f02")
    first = await person.say("/start huyhieuso", wrapped=True)
    assert any(CONSENT in t for t in first), first
    body = person.body("message.text.received", text="dong y")  # typed, without diacritics
    reply = await person.turn(body)
    assert reply == ["Họ và tên của bạn là gì?"]
    assert await person.turn(body, expect_reply=False) == []  # redelivered: answered once
    reply = await person.say(unicodedata.normalize("NFD", "Nguyễn Thị Lan"), wrapped=True)
    assert any("đơn vị nào" in t for t in reply), reply
    await person.say("Hòa Thạnh")
    await person.say("lan.nguyen@gmail.com")
    reply = await person.say("0912345678")
    assert any("Cảm ơn Nguyễn Thị Lan" in t for t in reply), reply
    _nfc(person.texts())
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        identity = await session.scalar(
            select(ChannelIdentity).where(ChannelIdentity.user_id == "0f0f0f0f0f0f0f0f0f02")
        )
        assert identity is not None and identity.channel is Channel.ZALOBOT
        assert identity.entry_ref == "huyhieuso"
        participant = await session.get(Participant, identity.participant_id)
        assert participant is not None and participant.name == "Nguyễn Thị Lan"  # stored NFC
