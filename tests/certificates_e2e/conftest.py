"""The whole application as `loa serve` builds it (bots.server.build_app over a Runtime), on the
shipped flows.yaml: two districts with chat channels — "demo" (Đoàn phường Mẫu, whose "Công
dân số" test campaign is open) and "tan-phu" (Quận Đoàn Tân Phú) — a real SQLite store and
records in tmp_path, the certificate process pool, and organisers logging in through the
console's own login form.

The pipeline's and the certificate service's clocks are a `Clock` the test moves: the demo
campaign's wave is judged at a fixed day inside it (so the test keeps passing after the wave
ends), and messaging windows close when the test says so.
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image, ImageDraw
from sqlalchemy import select

from bots.console import auth
from bots.records.models import (
    Certificate,
    OrganiserRole,
    Submission,
)
from bots.runtime import Runtime
from bots.server import RUNTIME, build_app
from bots.settings import from_env
from flows.vocab import Channel

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "flows.yaml"
PUBLIC = "http://loa.example.vn"  # http: the console sets Secure cookies under https
IN_WAVE = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # inside "Đợt thử nghiệm" of the demo
PASSWORD = "mat-khau-can-bo-2026"
ORGANISERS = {
    # who: (login, role, subtree root)
    "a": ("can.bo@phuongmau.vn", OrganiserRole.ADMIN, "demo"),
    "b": ("can.bo@tanphu.vn", OrganiserRole.ORGANISER, "tan-phu"),
}
NAME = "Nguyễn Văn An"
PRINTED = "NGUYỄN VĂN AN"
EMAIL = "an.nguyen@gmail.com"
PHONE = "0912 345 678"

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def screenshot(color: str, label: str) -> bytes:
    """A phone-screenshot-like PNG, different for every (color, label)."""
    image = Image.new("RGB", (360, 720), color)
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 60, 340, 380), outline="white", width=6)
    draw.text((30, 420), label, fill="white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Clock:
    now: datetime = IN_WAVE

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now = self.now + timedelta(**delta)


class Chat:
    """A participant in the browser chat, through its HTTP API (what bots/web/chat.js does)."""

    def __init__(self, client: TestClient[Any, Any], district: str = "demo") -> None:
        self.client = client
        self.user = secrets.token_urlsafe(18)
        self.district = district
        self.cursor = 0
        self.messages: list[dict[str, Any]] = []

    @property
    def runtime(self) -> Runtime:
        return self.client.app[RUNTIME]

    async def _post(self, **fields: Any) -> None:
        body = {"user": self.user, "district": self.district,
                "id": "m" + secrets.token_urlsafe(12), **fields}
        response = await self.client.post("/chat/send", json=body)
        assert response.status == 202, await response.text()

    async def settle(self) -> None:
        """Wait until the pipeline and the certificate service have nothing left to do."""
        runtime = self.runtime
        for _ in range(5):
            await runtime.pipeline.idle()
            if runtime.certificates is not None:
                await runtime.certificates.idle()
        await runtime.pipeline.idle()

    async def replies(self) -> list[dict[str, Any]]:
        await self.settle()
        response = await self.client.get(
            "/chat/messages",
            params={"user": self.user, "district": self.district, "after": self.cursor,
                    "wait": "0"},
        )
        assert response.status == 200
        data = await response.json()
        new: list[dict[str, Any]] = data["messages"]
        self.cursor = data["cursor"]
        self.messages.extend(new)
        return new

    async def start(self) -> str:
        await self._post(start=True)
        return self.text(await self.replies())

    async def say(self, text: str) -> str:
        await self._post(text=text)
        return self.text(await self.replies())

    async def tap(self, title: str) -> str:
        """Tap the button `title` of the latest message that has buttons."""
        choices = next(m["choices"] for m in reversed(self.messages) if m.get("choices"))
        payload = next((c["payload"] for c in choices if c["title"] == title), None)
        assert payload is not None, f"no button {title!r} in {[c['title'] for c in choices]}"
        await self._post(payload=payload, text=title)
        return self.text(await self.replies())

    async def upload(self, data: bytes, name: str = "anh.png") -> str:
        form = aiohttp.FormData()
        form.add_field("user", self.user)
        form.add_field("district", self.district)
        form.add_field("id", "m" + secrets.token_urlsafe(12))
        form.add_field("file", data, filename=name, content_type="image/png")
        response = await self.client.post("/chat/upload", data=form)
        assert response.status == 202, await response.text()
        return self.text(await self.replies())

    @staticmethod
    def text(messages: list[dict[str, Any]]) -> str:
        return "\n".join(m["text"] for m in messages)


async def register_and_submit(chat: Chat, images: Mapping[str, bytes]) -> str:
    """From the menu to a submitted "Công dân số" entry: registration (consent first), then the
    four evidence items (three real PNG uploads and a text answer). Returns the last reply."""
    assert "Bạn muốn làm gì" in await chat.start()
    consent = await chat.tap("Tham gia thử thách")
    assert "đồng ý" in consent.lower()
    assert "Họ và tên" in await chat.tap("Đồng ý")
    assert "đơn vị" in (await chat.say(NAME)).lower()
    assert "Chức vụ" in await chat.say("Chi đoàn Khu phố 1")
    assert "email" in (await chat.tap("Đoàn viên")).lower()
    assert "điện thoại" in (await chat.say(EMAIL)).lower()
    summary = await chat.say(PHONE)
    assert NAME in summary and "Chi đoàn Khu phố 1" in summary
    intro = await chat.tap("Đúng rồi")
    assert "4 minh chứng" in intro
    assert "Bước 1/4" in await chat.tap("Thực hiện thôi nào")
    assert "Bước 2/4" in await chat.upload(images["vneid"], "vneid.png")
    assert "Bước 3/4" in await chat.upload(images["thanh_nien_vn"], "qr-thanh-nien.png")
    assert "Bước 4/4" in await chat.upload(images["thanh_toan"], "qr-ngan-hang.png")
    done = await chat.say("Thông báo lưu trú trên VNeID, lĩnh vực cư trú")
    assert "đã gửi đủ 4 minh chứng" in done
    return done


IMAGES = {
    "vneid": screenshot("#b3261e", "VNEID - THONG TIN CA NHAN"),
    "thanh_nien_vn": screenshot("#1f4e9c", "THANH NIEN VIET NAM - MA QR"),
    "thanh_toan": screenshot("#1e7a46", "NGAN HANG - QR NHAN TIEN"),
}


class Organiser:
    """An organiser's browser session with the console (its own cookie jar)."""

    def __init__(self, client: TestClient[Any, Any], login: str) -> None:
        self.client = client
        self.login = login
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def sign_in(self) -> None:
        page = await self.get_text("/admin/login")
        token = csrf_of(page)
        async with self.session.post(self.url("/admin/login"), data={
            "csrf": token, "login": self.login, "password": PASSWORD, "next": ""},
            allow_redirects=True,
        ) as response:
            html = await response.text()
            assert response.status == 200 and "Bài dự thi" in html, html[:500]
            self.csrf = csrf_of(html)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, bytes, Mapping[str, str]]:
        async with self.session.get(self.url(path), **kwargs) as response:
            return response.status, await response.read(), dict(response.headers)

    async def get_text(self, path: str) -> str:
        status, body, _ = await self.get(path)
        assert status == 200, (path, status)
        return body.decode("utf-8")

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        async with self.session.post(self.url(path), data={"csrf": self.csrf, **data}) as response:
            return response.status, await response.text()

    async def close(self) -> None:
        await self.session.close()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


@dataclass
class Server:
    client: TestClient[Any, Any]
    clock: Clock
    organisers: dict[str, Organiser] = field(default_factory=dict)

    @property
    def runtime(self) -> Runtime:
        return self.client.app[RUNTIME]

    async def submission_of(self, chat: Chat) -> Submission:
        from bots.records.models import ChannelIdentity

        async with self.runtime.db.reads() as session:
            found = await session.scalar(
                select(Submission)
                .join(ChannelIdentity,
                      ChannelIdentity.participant_id == Submission.participant_id)
                .where(ChannelIdentity.user_id == chat.user,
                       ChannelIdentity.channel == Channel.WEBCHAT)
                .order_by(Submission.id.desc())
            )
            assert found is not None
            return found

    async def certificates(self) -> list[Certificate]:
        async with self.runtime.db.reads() as session:
            return list((await session.scalars(select(Certificate).order_by(Certificate.id)))
                        .all())


async def add_organisers(runtime: Runtime, now: datetime) -> None:
    hashed = auth.hash_password(PASSWORD)
    async with runtime.db.sessions() as session, session.begin():
        for login, role, org in ORGANISERS.values():
            await auth.create_organiser(
                session, login=login, password_hash=hashed, role=role, org=org, now=now,
                name=login.split("@")[0], must_change_password=False, created_by="test",
            )


def build(tmp_path: Path, env: Mapping[str, str] | None = None,
          adapters: Mapping[Channel, Any] | None = None) -> Runtime:
    settings = replace(
        from_env({"LOA_DATA_DIR": str(tmp_path / "var")}),
        config=FLOWS,
        public_url=PUBLIC,
        channel_health_every=0.0,
    )
    return Runtime(settings, env=dict(env or {}), adapters=adapters)


async def open_server(
    aiohttp_client: AiohttpClient, runtime: Runtime, clock: Clock
) -> Server:
    client = await aiohttp_client(build_app(runtime))
    runtime.pipeline.clock = clock
    assert runtime.certificates is not None
    runtime.certificates.clock = clock
    await add_organisers(runtime, clock())
    server = Server(client, clock)
    for who, (login, _, _) in ORGANISERS.items():
        organiser = Organiser(client, login)
        await organiser.sign_in()
        server.organisers[who] = organiser
    return server


@pytest.fixture
async def server(tmp_path: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[Server]:
    clock = Clock()
    opened = await open_server(aiohttp_client, build(tmp_path), clock)
    yield opened
    for organiser in opened.organisers.values():
        await organiser.close()
