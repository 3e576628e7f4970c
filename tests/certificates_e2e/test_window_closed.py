"""A Messenger conversation whose 24-hour window has closed by the time the organiser approves:
the name question could not reach the person, so the certificate is issued with the registered
name, e-mailed (PDF attached) to a real local SMTP server, and handed over in the chat together
with the deferred congratulations as soon as the person writes again."""

from __future__ import annotations

import email
import hashlib
import itertools
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from bots.records.models import CertificateStatus
from flows.vocab import Attachment, Channel, Inbound, InboundKind
from tests.bots.conftest import Recorder
from tests.certificates.conftest import Mailbox, _serve
from tests.certificates_e2e.conftest import (
    EMAIL,
    IMAGES,
    NAME,
    PHONE,
    PRINTED,
    AiohttpClient,
    Clock,
    Server,
    build,
    open_server,
)

PSID = "psid-2468"
_ids = itertools.count(1)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    yield from _serve(Mailbox())


class Messenger:
    """One person on Messenger (what the webhook would hand the pipeline)."""

    def __init__(self, server: Server, recorder: Recorder) -> None:
        self.server = server
        self.recorder = recorder

    async def send(self, kind: InboundKind, text: str = "", payload: str | None = None,
                   attachment: Attachment | None = None) -> list[str]:
        before = len(self.recorder.sent)
        runtime = self.server.runtime
        await runtime.pipeline.process(Inbound(
            district="demo", channel=Channel.MESSENGER, user_id=PSID, kind=kind,
            message_id=f"mid.{next(_ids)}", timestamp=self.server.clock(), text=text,
            payload=payload, attachments=(attachment,) if attachment else (),
        ))
        await settle(self.server)
        return [m.text for _, m in self.recorder.sent[before:]]

    async def say(self, text: str) -> str:
        return "\n".join(await self.send(InboundKind.TEXT, text))

    async def tap(self, title: str) -> str:
        for _, message in reversed(self.recorder.sent):
            for choice in message.choices:
                if choice.title == title:
                    return "\n".join(await self.send(InboundKind.CHOICE, title, choice.payload))
        raise AssertionError(f"no button {title!r}")

    async def picture(self, data: bytes) -> str:
        sha = self.server.runtime.files.put(data)
        attachment = Attachment(mime="image/png", size=len(data), sha256=sha)
        return "\n".join(await self.send(InboundKind.IMAGE, attachment=attachment))


async def settle(server: Server) -> None:
    runtime = server.runtime
    for _ in range(5):
        await runtime.pipeline.idle()
        if runtime.certificates is not None:
            await runtime.certificates.idle()


async def test_certificate_by_email_when_the_window_closed_and_on_the_next_message(
    tmp_path: Path, aiohttp_client: AiohttpClient, mailbox: Mailbox
) -> None:
    recorder = Recorder()
    env = {
        "LOA_SMTP_HOST": "127.0.0.1",
        "LOA_SMTP_PORT": str(mailbox.port),
        "LOA_SMTP_TLS": "none",
        "LOA_SMTP_FROM": "Đoàn phường Mẫu <chungnhan@loa.example.vn>",
    }
    clock = Clock()
    server = await open_server(aiohttp_client, build(tmp_path, env, {Channel.MESSENGER: recorder}),
                               clock)
    try:
        person = Messenger(server, recorder)
        assert "Bạn muốn làm gì" in "\n".join(await person.send(InboundKind.START))
        await person.tap("Tham gia thử thách")
        await person.tap("Đồng ý")
        await person.say(NAME)
        await person.say("Chi đoàn Khu phố 1")
        await person.tap("Đoàn viên")
        await person.say(EMAIL)
        await person.say(PHONE)
        await person.tap("Đúng rồi")
        assert "Bước 1/4" in await person.tap("Thực hiện thôi nào")
        await person.picture(IMAGES["vneid"])
        await person.picture(IMAGES["thanh_nien_vn"])
        await person.picture(IMAGES["thanh_toan"])
        assert "đã gửi đủ 4 minh chứng" in await person.say("Đã dùng dịch vụ lưu trú trên VNeID")

        # A day and a half later (the Messenger window is 24 h) the organiser approves.
        clock.advance(hours=30)
        a = server.organisers["a"]
        async with server.runtime.db.reads() as session:
            from sqlalchemy import select

            from bots.records.models import Submission

            submission = await session.scalar(select(Submission))
            assert submission is not None
        before = len(recorder.sent)
        status, html = await a.post(f"/admin/submissions/{submission.id}/accept-all", {})
        assert status == 200 and "Bài đã được duyệt" in html
        await settle(server)
        assert recorder.sent[before:] == []  # nothing may be sent outside the window

        [row] = await server.certificates()
        assert row.status is CertificateStatus.ISSUED and row.name == PRINTED
        assert row.delivered_via == "email" and row.email_message_id
        assert row.chat_sent_at is not None  # in the conversation, waiting for the window

        # The e-mail: to the registered address, the PDF attached byte for byte.
        [envelope] = mailbox.envelopes
        assert envelope.rcpt_tos == [EMAIL]
        message = email.message_from_bytes(envelope.original_content or b"", policy=default)
        assert isinstance(message, EmailMessage)
        assert "Công dân số" in str(message["Subject"])
        assert message["Message-ID"] == row.email_message_id
        attachments = {part.get_filename(): part.get_content()
                       for part in message.iter_attachments()}
        pdf = attachments["giay-chung-nhan-nguyen-van-an.pdf"]
        assert hashlib.sha256(pdf).hexdigest() == row.pdf_sha256
        body = message.get_body(("plain",))
        assert body is not None and f"/verify/{row.serial}" in body.get_content()

        # They write again: the congratulations and the certificate arrive first, then the reply.
        clock.advance(hours=1)
        told = await person.send(InboundKind.TEXT, "xin chào")
        congratulations = next(i for i, t in enumerate(told) if t.startswith("Chúc mừng"))
        certificate = next(i for i, t in enumerate(told) if (row.serial or "-") in t)
        menu = next(i for i, t in enumerate(told) if "Bạn muốn làm gì" in t)
        assert congratulations < certificate < menu
        assert not any("Tên in trên giấy chứng nhận" in t for t in told)  # not asked: issued
        sent = recorder.sent[-len(told):]
        image = sent[certificate][1].image
        assert image == f"/media/{row.png_sha256}.png"
        assert sent[certificate][1].file == f"/media/{row.pdf_sha256}.pdf"
        response = await server.client.get(image)
        assert response.status == 200
        assert hashlib.sha256(await response.read()).hexdigest() == row.png_sha256
        assert len(mailbox.envelopes) == 1  # e-mailed once
    finally:
        for organiser in server.organisers.values():
            await organiser.close()
