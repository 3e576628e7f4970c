"""Console fixtures: a real records database (SQLite in tmp_path), real evidence files, the
console mounted at /admin in a real aiohttp app, two districts each with an organiser.

The data is written the way the bot writes it (bots.records.writer with the engine's record
events), so the console reads exactly what production stores.

    tan-phu  (Quận Đoàn Tân Phú)     units tan-quy, phu-tho-hoa
      an     messenger, tan-quy      vneid=RED, thanh_toan=BLUE (QR "bank:970436:0011"), text
      binh   telegram, phu-tho-hoa   vneid=RED (same file as an), thanh_toan (same QR as an,
                                     same Telegram unique id as ...), same phone as an
      chi    zalo, tan-quy           vneid=RED_NEAR (a few pixels differ from RED)
    binh-tan (Quận Đoàn Bình Tân)    units an-lac, binh-tri-dong
      cuong  zalo, an-lac            vneid=RED (same file as an), same email as an
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image, ImageDraw
from sqlalchemy import select
from yarl import URL

from bots.console import auth
from bots.console.app import COOKIE, ConsoleDeps, mount_console
from bots.console.tree import OrgTree, load_org_tree
from bots.records.db import Database, default_url, open_database
from bots.records.files import FileStore
from bots.records.models import (
    ChannelIdentity,
    EvidenceItem,
    Organiser,
    OrganiserRole,
    Participant,
    Submission,
)
from bots.records.writer import apply, touch_identity
from bots.runtime import load_flows
from flows.compiler import CompiledBundle
from flows.events import ConsentRecorded, EvidenceSaved, FieldSaved, SubmissionSubmitted
from flows.vocab import Attachment, Channel, ConversationKey, Inbound, Outbound

HERE = Path(__file__).parent
FLOWS = HERE / "flows.yaml"
PASSWORD = "mat-khau-thu-nghiem-2026"
NOW = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
CAMPAIGN = "cong_dan_so"

Client = TestClient[Any, Any]


def png(color: str, label: str, size: tuple[int, int] = (360, 640), dots: int = 0) -> bytes:
    """A small phone-screenshot-like PNG; `dots` changes a few pixels (a near duplicate)."""
    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    draw.rectangle((24, 80, size[0] - 24, 300), outline="white", width=6)
    draw.text((32, 330), label, fill="white")
    for i in range(dots):
        draw.point((5 + i, 5), fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


RED = png("#b3261e", "CAN CUOC CONG DAN")
RED_NEAR = png("#b3261e", "CAN CUOC CONG DAN", dots=3)
BLUE = png("#1f4e9c", "QR NGAN HANG")
GREEN = png("#1e7a46", "QR NGAN HANG 2")


@lru_cache(maxsize=1)
def password_hash() -> str:
    return auth.hash_password(PASSWORD)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now = self.now + timedelta(**delta)


@dataclass
class World:
    """Everything a console test needs."""

    db: Database
    files: FileStore
    bundle: CompiledBundle
    tree: OrgTree
    clock: Clock
    notified: list[Inbound] = field(default_factory=list)
    sent: list[tuple[ConversationKey, Outbound]] = field(default_factory=list)
    fail_notify: bool = False
    keys: dict[str, ConversationKey] = field(default_factory=dict)
    participants: dict[str, int] = field(default_factory=dict)
    submissions: dict[str, int] = field(default_factory=dict)
    organisers: dict[str, int] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    async def notify(self, inbound: Inbound) -> bool:
        if self.fail_notify:
            raise ConnectionError("store unavailable")
        self.notified.append(inbound)
        return True

    async def send(self, key: ConversationKey, message: Outbound) -> None:
        self.sent.append((key, message))

    def deps(self, **changes: Any) -> ConsoleDeps:
        values: dict[str, Any] = dict(
            db=self.db,
            files=self.files,
            flows=lambda: self.bundle,
            tree=lambda: self.tree,
            notify=self.notify,
            send=self.send,
            clock=self.clock,
        )
        values.update(changes)
        return ConsoleDeps(**values)

    async def items(self, submission: str) -> list[EvidenceItem]:
        async with self.db.reads() as session:
            return list(
                (
                    await session.scalars(
                        select(EvidenceItem)
                        .where(EvidenceItem.submission_id == self.submissions[submission])
                        .order_by(EvidenceItem.id)
                    )
                ).all()
            )

    async def item(self, submission: str, criterion: str) -> EvidenceItem:
        rows = [i for i in await self.items(submission) if i.criterion == criterion]
        return rows[-1]

    async def submission(self, name: str) -> Submission:
        async with self.db.reads() as session:
            found = await session.get(Submission, self.submissions[name])
            assert found is not None
            return found

    async def identity(self, name: str) -> ChannelIdentity:
        key = self.keys[name]
        async with self.db.reads() as session:
            found = await session.scalar(
                select(ChannelIdentity).where(
                    ChannelIdentity.district == key.district,
                    ChannelIdentity.channel == key.channel,
                    ChannelIdentity.user_id == key.user_id,
                )
            )
            assert found is not None
            return found

    async def say(self, name: str, message_id: str, *events: Any, at: datetime | None = None
                  ) -> None:
        """Write record events as if the engine produced them for this person's message."""
        moment = at or self.clock()
        await apply(self.db.sessions, self.keys[name], message_id, list(events), moment,
                    files=self.files)
        await touch_identity(self.db.sessions, self.keys[name], moment)

    def image(self, data: bytes, unique_id: str | None = None, qr: str | None = None,
              phash: str | None = None) -> Attachment:
        sha = self.files.put(data)
        return Attachment(mime="image/png", size=len(data), sha256=sha, unique_id=unique_id,
                          qr=qr, phash=phash)


PHASH_RED = "f0e0c0c0c0e0f0ff"
PHASH_NEAR = "f0e0c0c0c0e0f0fc"  # 2 bits from PHASH_RED
PHASH_BLUE = "0f1f3f3f3f1f0f00"


async def seed(world: World) -> None:
    people = {
        # name: (district, channel, user, full name, unit, phone, email, last inbound ago)
        "an": ("tan-phu", Channel.MESSENGER, "psid-an", "Nguyễn Văn An", "tan-quy",
               "+84901234567", "an.nguyen@gmail.com", timedelta(hours=22)),
        "binh": ("tan-phu", Channel.TELEGRAM, "tg-binh", "Trần Thị Bình", "phu-tho-hoa",
                 "+84901234567", "binh.tran@gmail.com", timedelta(hours=2)),
        "chi": ("tan-phu", Channel.ZALO, "zalo-chi", "Phạm Thu Chi", "tan-quy",
                "+84907654321", "chi.pham@gmail.com", timedelta(hours=60)),
        "cuong": ("binh-tan", Channel.ZALO, "zalo-cuong", "Lê Văn Cường", "an-lac",
                  "+84908888888", "an.nguyen@gmail.com", timedelta(hours=1)),
    }
    for name, (district, channel, user, full, unit, phone, email, ago) in people.items():
        world.keys[name] = ConversationKey(district, channel, user)
        at = world.clock() - ago
        await world.say(
            name, f"{name}-1",
            ConsentRecorded(True, "Bạn đồng ý chứ?"),
            FieldSaved("dong_y", "yes"),
            FieldSaved("ho_ten", full),
            FieldSaved("don_vi", unit),
            FieldSaved("email", email),
            FieldSaved("so_dien_thoai", phone),
            at=at - timedelta(hours=1),
        )
    red_hash = world.files.put(RED)
    world.hashes["red"] = red_hash
    evidence: dict[str, list[EvidenceSaved]] = {
        "an": [
            EvidenceSaved(CAMPAIGN, "vneid", attachment=world.image(
                RED, unique_id="AgAD-an-vneid", phash=PHASH_RED)),
            EvidenceSaved(CAMPAIGN, "thanh_toan", attachment=world.image(
                BLUE, unique_id="AgAD-shared", qr="bank:970436:0011", phash=PHASH_BLUE)),
            EvidenceSaved(CAMPAIGN, "dich_vu_cong",
                          text="Thông báo lưu trú trên VNeID – lĩnh vực cư trú"),
        ],
        "binh": [
            EvidenceSaved(CAMPAIGN, "vneid", attachment=world.image(
                RED, unique_id="AgAD-binh-vneid", phash=PHASH_RED)),
            EvidenceSaved(CAMPAIGN, "thanh_toan", attachment=world.image(
                GREEN, unique_id="AgAD-shared", qr="bank:970436:0011")),
            EvidenceSaved(CAMPAIGN, "dich_vu_cong", text="Cấp lại giấy khai sinh trực tuyến"),
        ],
        "chi": [
            EvidenceSaved(CAMPAIGN, "vneid", attachment=world.image(
                RED_NEAR, unique_id="AgAD-chi-vneid", phash=PHASH_NEAR)),
            EvidenceSaved(CAMPAIGN, "dich_vu_cong", text="Đăng ký thường trú qua cổng dịch vụ"),
        ],
        "cuong": [
            EvidenceSaved(CAMPAIGN, "vneid", attachment=world.image(
                RED, unique_id="AgAD-cuong-vneid", phash=PHASH_RED)),
            EvidenceSaved(CAMPAIGN, "dich_vu_cong", text="Nộp hồ sơ cấp đổi căn cước"),
        ],
    }
    for name, items in evidence.items():
        ago = people[name][7]
        at = world.clock() - ago
        await world.say(name, f"{name}-2", *items, at=at - timedelta(minutes=30))
        await world.say(name, f"{name}-3", SubmissionSubmitted(CAMPAIGN, "Đợt 1"), at=at)
    async with world.db.reads() as session:
        for name, key in world.keys.items():
            identity = await session.scalar(
                select(ChannelIdentity).where(ChannelIdentity.user_id == key.user_id)
            )
            assert identity is not None
            world.participants[name] = identity.participant_id
            world.submissions[name] = await session.scalar(
                select(Submission.id).where(Submission.participant_id == identity.participant_id)
            ) or 0
    accounts = {
        # name: (login, role, org, units)
        "org_a": ("tanphu@example.com", OrganiserRole.ORGANISER, "tan-phu", []),
        "org_b": ("binhtan@example.com", OrganiserRole.ORGANISER, "binh-tan", []),
        "admin": ("thanhdoan@example.com", OrganiserRole.ADMIN, "tp-hcm", []),
        "reviewer": ("cham.tanquy@example.com", OrganiserRole.REVIEWER, "tan-phu", ["tan-quy"]),
        "admin_a": ("admin.tanphu@example.com", OrganiserRole.ADMIN, "tan-phu", []),
    }
    async with world.db.sessions() as session, session.begin():
        for name, (login, role, org, units) in accounts.items():
            account = await auth.create_organiser(
                session, login=login, password_hash=password_hash(), role=role, org=org,
                now=world.clock(), name=f"Cán bộ {name}", units=units, created_by="test",
            )
            world.organisers[name] = account.id


LOGINS = {
    "org_a": "tanphu@example.com",
    "org_b": "binhtan@example.com",
    "admin": "thanhdoan@example.com",
    "reviewer": "cham.tanquy@example.com",
    "admin_a": "admin.tanphu@example.com",
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    flows = load_flows(FLOWS)
    db = await open_database(default_url(tmp_path / "data"))
    tree = load_org_tree(FLOWS, flows.version)
    w = World(db=db, files=FileStore(tmp_path / "files"), bundle=flows.compiled, tree=tree,
              clock=Clock())
    await seed(w)
    yield w
    await db.close()


AiohttpClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def client(world: World, aiohttp_client: AiohttpClient) -> Client:
    app = web.Application()
    mount_console(app, world.deps())
    return await aiohttp_client(app)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_in(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def sign_in(client: Client, world: World, who: str) -> str:
    """Log `who` in through the real login form; returns the page's CSRF token."""
    client.session.cookie_jar.clear()
    page = await client.get("/admin/login")
    assert page.status == 200
    token = csrf_in(await page.text())
    response = await client.post(
        "/admin/login",
        data={"csrf": token, "login": LOGINS[who], "password": PASSWORD, "next": ""},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return await page_csrf(client)


async def page_csrf(client: Client) -> str:
    page = await client.get("/admin/password")
    assert page.status == 200
    return csrf_in(await page.text())


async def quick_sign_in(client: Client, world: World, who: str) -> str:
    """A login without the form (no argon2 verify): a session row and its cookie."""
    async with world.db.sessions() as session, session.begin():
        organiser = await session.get(Organiser, world.organisers[who])
        assert organiser is not None
        token = await auth.open_session(session, organiser, world.clock(), auth.SessionPolicy(),
                                        ip="127.0.0.1", user_agent="pytest")
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: token}, URL(str(client.make_url("/admin/"))))
    return auth.csrf_for(token)


async def participant_row(world: World, name: str) -> Participant:
    async with world.db.reads() as session:
        found = await session.get(Participant, world.participants[name])
        assert found is not None
        return found
