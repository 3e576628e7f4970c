"""The issuing service against a real SQLite database and the real drawing pool: one
certificate per approved submission whatever is replayed or raced, deletion of personal data
revokes it (and removes its files), and /chung-nhan finds it again with a one-time code."""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, update

from bots.certificates.issue import CertificateService, certificate_files, media_path
from bots.certificates.mail import SmtpSettings, TlsMode
from bots.certificates.render import CertificateRenderer
from bots.records.db import Database, open_database
from bots.records.files import FileStore
from bots.records.models import (
    Certificate,
    CertificateStatus,
    ChannelIdentity,
    Submission,
    SubmissionStatus,
)
from bots.records.writer import apply, touch_identity
from bots.runtime import load_flows
from bots.verify import PublicDeps, add_public_routes
from flows.compiler import CompiledBundle
from flows.events import (
    CertificateRequested,
    ConsentRecorded,
    DataDeletionRequested,
    EvidenceSaved,
    FieldSaved,
    SubmissionSubmitted,
)
from flows.vocab import Attachment, Channel, ConversationKey, Inbound
from tests.certificates.conftest import Mailbox, _serve
from tests.certificates_e2e.conftest import FLOWS, AiohttpClient

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
KEY = ConversationKey("demo", Channel.WEBCHAT, "web-user-1")
CAMPAIGN = "cong_dan_so_demo"


@pytest.fixture(scope="module")
def renderer() -> Iterator[CertificateRenderer]:
    pool = CertificateRenderer(workers=1)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def bundle() -> CompiledBundle:
    return load_flows(FLOWS).compiled


@dataclass
class Inbox:
    """The pipeline's ingest as the service sees it: de-duplicated by message id."""

    seen: dict[str, Inbound] = field(default_factory=dict)
    calls: int = 0

    async def __call__(self, inbound: Inbound) -> bool:
        self.calls += 1
        if inbound.message_id in self.seen:
            return False
        self.seen[inbound.message_id] = inbound
        return True


@dataclass
class World:
    db: Database
    files: FileStore
    bundle: CompiledBundle
    inbox: Inbox
    renderer: CertificateRenderer
    submission_id: int = 0

    def service(self, **changes: Any) -> CertificateService:
        values: dict[str, Any] = dict(base_url="https://loa.example.vn", renderer=self.renderer,
                                      clock=lambda: NOW)
        values.update(changes)
        return CertificateService(self.db, self.files, lambda: self.bundle, self.inbox, **values)

    async def certificates(self) -> list[Certificate]:
        async with self.db.reads() as session:
            return list((await session.scalars(select(Certificate))).all())


@pytest.fixture
async def world(tmp_path: Path, renderer: CertificateRenderer,
                bundle: CompiledBundle) -> AsyncIterator[World]:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'loa.sqlite3'}")
    files = certificate_files(tmp_path)
    evidence = FileStore(tmp_path / "files")
    sha = evidence.put(b"\x89PNG fake")

    events = [
        ConsentRecorded(True, "Bạn đồng ý chứ?"),
        FieldSaved("ho_ten", "Nguyễn Văn An"),
        FieldSaved("don_vi", "kp-1"),
        FieldSaved("email", "an@example.com"),
        FieldSaved("so_dien_thoai", "+84912345678"),
        EvidenceSaved(CAMPAIGN, "vneid", attachment=Attachment(mime="image/png", sha256=sha)),
        EvidenceSaved(CAMPAIGN, "dich_vu_cong", text="Lưu trú trên VNeID"),
        SubmissionSubmitted(CAMPAIGN, "Đợt thử nghiệm"),
    ]
    await apply(db.sessions, KEY, "m1", events, NOW)
    await touch_identity(db.sessions, KEY, NOW)
    async with db.sessions() as session, session.begin():
        submission = await session.scalar(select(Submission))
        assert submission is not None
        submission.status = SubmissionStatus.APPROVED
        submission_id = submission.id
    made = World(db, files, bundle, Inbox(), renderer, submission_id)
    yield made
    await db.close()


async def request(world: World, inbound_id: str, name: str = "NGUYỄN VĂN AN") -> None:
    event = CertificateRequested(CAMPAIGN, name, str(world.submission_id))
    await apply(world.db.sessions, KEY, inbound_id, [event], NOW)


async def test_replays_races_and_repeats_issue_one_certificate(world: World) -> None:
    await request(world, "confirm-1")
    await request(world, "confirm-1")  # the same inbound replayed after a crash
    await request(world, "confirm-2", "NGUYỄN VĂN ÂN")  # a second confirmation (another inbound)
    [row] = await world.certificates()
    assert row.status is CertificateStatus.REQUESTED and row.name == "NGUYỄN VĂN AN"

    # Two processes' services pick it up at once: one number, one set of files, one hand-over.
    first, second = world.service(), world.service()
    issued = await asyncio.gather(first.run(), second.run())
    assert sorted(issued) == [0, 1]
    await first.run()
    [row] = await world.certificates()
    assert row.status is CertificateStatus.ISSUED and row.sequence == 1
    assert re.fullmatch(r"CDSD-2026-000001-[0-9A-Z]{6}", row.serial or "")
    assert list(world.inbox.seen) == [f"certificate:{row.id}"]
    data = dict(world.inbox.seen[f"certificate:{row.id}"].data)
    assert data["image"] == f"/media/{row.png_sha256}.png"
    assert data["verify"] == f"https://loa.example.vn/verify/{row.serial}"
    for sha, ext in ((row.png_sha256, "png"), (row.pdf_sha256, "pdf"), (row.badge_sha256, "png")):
        assert sha is not None and media_path(world.files, f"{sha}.{ext}") is not None
    assert media_path(world.files, f"{'0' * 64}.png") is None  # only what exists
    assert media_path(world.files, "../../loa.sqlite3") is None


async def test_a_failed_drawing_is_retried_then_reported(world: World) -> None:
    class Broken:
        async def certificate(self, data: Any) -> Any:
            raise OSError("worker died")

        async def badge(self, data: Any) -> bytes:
            return b""

        async def aclose(self) -> None:
            return None

    await request(world, "confirm-1")
    service = world.service(renderer=Broken())
    for _ in range(5):
        await service.run()
    [row] = await world.certificates()
    assert row.status is CertificateStatus.FAILED and row.attempts == 5
    assert world.inbox.seen == {}


async def test_deleting_personal_data_revokes_and_removes_the_files(
    world: World, aiohttp_client: AiohttpClient
) -> None:
    await request(world, "confirm-1")
    service = world.service()
    await service.run()
    [row] = await world.certificates()
    app = web.Application()
    add_public_routes(app, PublicDeps(db=lambda: world.db, flows=lambda: world.bundle,
                                      notify=world.inbox))
    client = await aiohttp_client(app)
    page = await client.get(f"/verify/{row.serial}")
    assert page.status == 200 and "NGUYỄN VĂN AN" in await page.text()

    await apply(world.db.sessions, KEY, "delete-1", [DataDeletionRequested()], NOW)
    await service.run()
    [row] = await world.certificates()
    assert row.status is CertificateStatus.REVOKED and row.name == "" and row.unit is None
    assert row.png_sha256 is None and row.pdf_sha256 is None
    assert [p for p in world.files.root.rglob("*") if p.is_file()] == []
    page = await client.get(f"/verify/{row.serial}")
    html = await page.text()
    assert page.status == 200 and "đã bị thu hồi" in html and "NGUYỄN" not in html


async def test_finding_ones_certificate_with_a_one_time_code(
    world: World, aiohttp_client: AiohttpClient
) -> None:
    await request(world, "confirm-1")
    await world.service().run()
    [row] = await world.certificates()
    app = web.Application()
    add_public_routes(app, PublicDeps(db=lambda: world.db, flows=lambda: world.bundle,
                                      notify=world.inbox, clock=lambda: NOW))
    client = await aiohttp_client(app)
    assert "Số điện thoại" in await (await client.get("/chung-nhan")).text()

    # An unknown number gets the same answer, and nothing is sent anywhere.
    before = dict(world.inbox.seen)
    unknown = await client.post("/chung-nhan", data={"step": "send", "phone": "0987654321"})
    known = await client.post("/chung-nhan", data={"step": "send", "phone": "0912 345 678"})
    strip = re.compile(r"0987654321|0912 345 678")
    assert strip.sub("", await unknown.text()) == strip.sub("", await known.text())
    codes = [i for k, i in world.inbox.seen.items() if k not in before]
    assert len(codes) == 1 and codes[0].payload == "say"  # in the chat (no window on the web)
    code = re.search(r"\b(\d{6})\b", dict(codes[0].data)["text"]).group(1)  # type: ignore[union-attr]
    assert (codes[0].district, codes[0].user_id) == ("demo", "web-user-1")

    wrong = "000000" if code != "000000" else "111111"
    refused = await client.post("/chung-nhan",
                                data={"step": "check", "phone": "0912345678", "code": wrong})
    assert refused.status == 400 and "Bạn còn 4 lần thử" in await refused.text()
    found = await client.post("/chung-nhan",
                              data={"step": "check", "phone": "0912345678", "code": code})
    html = await found.text()
    assert found.status == 200 and row.serial in html
    assert f"/media/{row.pdf_sha256}.pdf" in html and found.headers["Cache-Control"].startswith(
        "private")
    again = await client.post("/chung-nhan",
                              data={"step": "check", "phone": "0912345678", "code": code})
    assert again.status == 400  # one-time

    # Three codes per number an hour.
    statuses = [(await client.post("/chung-nhan", data={"step": "send", "phone": "0912345678"}))
                .status for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_an_expired_code_is_refused(world: World, aiohttp_client: AiohttpClient) -> None:
    await request(world, "confirm-1")
    await world.service().run()
    moment = {"now": NOW}
    app = web.Application()
    add_public_routes(app, PublicDeps(db=lambda: world.db, flows=lambda: world.bundle,
                                      notify=world.inbox, clock=lambda: moment["now"]))
    client = await aiohttp_client(app)
    await client.post("/chung-nhan", data={"step": "send", "phone": "0912345678"})
    sent = [i for k, i in world.inbox.seen.items() if k.startswith("lookup-code:")]
    code = re.search(r"\b(\d{6})\b", dict(sent[0].data)["text"]).group(1)  # type: ignore[union-attr]
    moment["now"] = NOW + timedelta(minutes=11)
    late = await client.post("/chung-nhan",
                             data={"step": "check", "phone": "0912345678", "code": code})
    assert late.status == 400 and "hết hạn" in await late.text()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    yield from _serve(Mailbox())


async def test_the_code_goes_by_email_when_no_chat_window_is_open(
    world: World, aiohttp_client: AiohttpClient, mailbox: Mailbox
) -> None:
    await request(world, "confirm-1")
    await world.service().run()
    async with world.db.sessions() as session, session.begin():  # a Messenger person, days ago
        await session.execute(update(ChannelIdentity).values(
            channel=Channel.MESSENGER, last_inbound_at=NOW - timedelta(days=3)))
    smtp = SmtpSettings(host="127.0.0.1", port=mailbox.port, tls=TlsMode.NONE,
                        sender="Đoàn phường Mẫu <chungnhan@loa.example.vn>")
    app = web.Application()
    add_public_routes(app, PublicDeps(db=lambda: world.db, flows=lambda: world.bundle,
                                      notify=world.inbox, smtp=lambda: smtp, clock=lambda: NOW))
    client = await aiohttp_client(app)
    before = set(world.inbox.seen)
    response = await client.post("/chung-nhan", data={"step": "send", "phone": "0912345678"})
    assert response.status == 200
    assert set(world.inbox.seen) == before  # nothing into a closed chat
    [envelope] = mailbox.envelopes
    assert envelope.rcpt_tos == ["an@example.com"]
    message = email.message_from_bytes(envelope.original_content or b"", policy=default)
    assert isinstance(message, EmailMessage) and "tra cứu" in str(message["Subject"])
    code = re.search(r"\b(\d{6})\b", message.get_content())
    assert code is not None
    found = await client.post("/chung-nhan",
                              data={"step": "check", "phone": "0912345678", "code": code.group(1)})
    assert found.status == 200 and "Tải bản PDF" in await found.text()


async def test_a_malformed_serial_is_refused_before_the_database(
    aiohttp_client: AiohttpClient, bundle: CompiledBundle
) -> None:
    def no_database() -> Database:
        raise AssertionError("the database was touched")

    async def notify(inbound: Inbound) -> bool:
        return True

    app = web.Application()
    add_public_routes(app, PublicDeps(db=no_database, flows=lambda: bundle, notify=notify))
    client = await aiohttp_client(app)
    for bad in ("x", "CDS-2023-000001-AAAAA", "CDS-2023-000001-AAAAAU", "%00", "A" * 200):
        assert (await client.get(f"/verify/{bad}")).status == 404
