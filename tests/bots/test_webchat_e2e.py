"""End to end over the real aiohttp app: the browser chat's HTTP API, the shipped flows.yaml, the
real engine, SQLite store and records. Each test drives whole conversations the way the page
does (send, upload, long-poll for replies) and then looks in the database."""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from bots.records.models import (
    ChannelIdentity,
    EvidenceItem,
    EvidenceKind,
    Participant,
    Submission,
    SubmissionStatus,
)
from bots.server import RUNTIME, create_app
from bots.settings import Settings
from tests.bots.conftest import REPO

Client = Callable[..., Awaitable[TestClient[Any, Any]]]

NAME = "Nguyễn Văn An"
EMAIL = "an.nguyen@gmail.com"


def screenshot(color: str, label: str) -> bytes:
    """A phone-sized PNG, different for every (color, label)."""
    image = Image.new("RGB", (360, 720), color)
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 60, 340, 380), outline="white", width=6)
    draw.text((30, 420), label, fill="white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class Browser:
    """What bots/web/chat.js does, as a test client."""

    def __init__(self, client: TestClient[Any, Any], district: str = "demo") -> None:
        self.client = client
        self.user = secrets.token_urlsafe(18)
        self.district = district
        self.cursor = 0
        self.messages: list[dict[str, Any]] = []

    async def post(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        body = {"user": self.user, "district": self.district, **fields}
        body.setdefault("id", "m" + secrets.token_urlsafe(12))
        response = await self.client.post("/chat/send", json=body)
        return response.status, await response.json()

    async def replies(self) -> list[dict[str, Any]]:
        await self.client.app[RUNTIME].pipeline.idle()
        response = await self.client.get(
            "/chat/messages",
            params={"user": self.user, "district": self.district, "after": self.cursor,
                    "wait": "0"},
        )
        assert response.status == 200
        data = await response.json()
        new: list[dict[str, Any]] = data["messages"]
        assert all(m["seq"] > self.cursor for m in new)
        self.cursor = data["cursor"]
        self.messages.extend(new)
        return new

    async def start(self, ref: str | None = None) -> str:
        status, _ = await self.post(start=True, **({"ref": ref} if ref else {}))
        assert status == 202
        return self.text(await self.replies())

    async def say(self, text: str) -> str:
        status, body = await self.post(text=text)
        assert status == 202, body
        return self.text(await self.replies())

    async def tap(self, title: str) -> str:
        """Tap the button titled `title` under the latest message that has buttons."""
        choices = next(m["choices"] for m in reversed(self.messages) if m.get("choices"))
        payload = next((c["payload"] for c in choices if c["title"] == title), None)
        assert payload is not None, f"no button {title!r} in {[c['title'] for c in choices]}"
        status, _ = await self.post(payload=payload, text=title)
        assert status == 202
        return self.text(await self.replies())

    async def upload(self, data: bytes, name: str = "anh.png") -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("user", self.user)
        form.add_field("district", self.district)
        form.add_field("id", "m" + secrets.token_urlsafe(12))
        form.add_field("file", data, filename=name, content_type="image/png")
        response = await self.client.post("/chat/upload", data=form)
        return response.status, await response.json()

    @staticmethod
    def text(messages: list[dict[str, Any]]) -> str:
        return "\n".join(m["text"] for m in messages)

    def last_image(self) -> str | None:
        return next((m["image"] for m in reversed(self.messages) if m.get("image")), None)


async def register(chat: Browser) -> None:
    """Registration from the menu, consent first."""
    assert "Bạn muốn làm gì" in await chat.start()
    assert "đồng ý" in (await chat.tap("Đăng ký thông tin")).lower()
    assert "Họ và tên" in await chat.tap("Đồng ý")
    assert "đơn vị" in (await chat.say(NAME)).lower()
    assert "Chức vụ" in await chat.say("Chi đoàn Khu phố 1")
    assert "email" in (await chat.tap("Đoàn viên")).lower()
    assert "điện thoại" in (await chat.say(EMAIL)).lower()
    summary = await chat.say("0912 345 678")
    assert NAME in summary and EMAIL in summary
    assert "đăng ký thành công" in await chat.tap("Đúng rồi")


async def records_of(settings: Settings) -> dict[str, Any]:
    engine = create_async_engine(settings.database_url)
    try:
        async with AsyncSession(engine) as db:
            participants = (await db.scalars(select(Participant))).all()
            identities = (await db.scalars(select(ChannelIdentity))).all()
            submissions = (await db.scalars(select(Submission))).all()
            evidence = (await db.scalars(select(EvidenceItem))).all()
    finally:
        await engine.dispose()
    return {"participants": participants, "identities": identities,
            "submissions": submissions, "evidence": evidence}


@pytest.fixture
async def client(aiohttp_client: Client, settings: Settings) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(settings))


async def test_registration_then_the_four_evidence_steps_and_a_restart(
    aiohttp_client: Client, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    chat = Browser(client)
    await register(chat)

    assert "Bạn muốn làm gì" in await chat.say("menu")
    intro = await chat.tap("Tham gia thử thách")
    assert f"Chào {NAME}" in intro  # registered already: straight into the challenge
    step1 = await chat.tap("Thực hiện thôi nào")
    assert "Bước 1/4" in step1
    sample = chat.last_image()
    assert sample is not None and sample.startswith("/media/")
    response = await client.get(sample)
    assert response.status == 200 and response.content_type == "image/png"
    assert await response.read() == (REPO / "media" / "mau-vneid.png").read_bytes()

    shots = [screenshot(c, c) for c in ("navy", "darkgreen", "maroon")]
    for n, shot in enumerate(shots, start=2):
        status, body = await chat.upload(shot)
        assert status == 202, body
        assert body["sha256"] == hashlib.sha256(shot).hexdigest()
        assert f"Bước {n}/4" in chat.text(await chat.replies())
    done = await chat.say("Thông báo lưu trú trên VNeID – lĩnh vực cư trú")
    assert "đủ 4 minh chứng" in done
    await client.close()  # stops the runtime: stores and database closed

    found = await records_of(settings)
    (participant,) = (row for row in found["participants"])
    assert participant.name == NAME
    assert participant.email == EMAIL
    assert participant.phone == "+84912345678"
    assert participant.consent_given_at is not None
    (identity,) = (row for row in found["identities"])
    assert identity.channel.value == "webchat" and identity.user_id == chat.user
    (submission,) = (row for row in found["submissions"])
    assert submission.status is SubmissionStatus.SUBMITTED
    assert submission.campaign == "cong_dan_so_demo"
    evidence = {row.criterion: row for row in found["evidence"]}
    assert len(evidence) == 4
    images = [e for e in evidence.values() if e.kind is EvidenceKind.IMAGE]
    assert sorted(e.sha256 for e in images) == sorted(hashlib.sha256(s).hexdigest() for s in shots)
    for item in images:
        assert (settings.files_dir / item.file_path).read_bytes() in shots
        assert item.mime == "image/png" and item.perceptual_hash  # inspected by bots.media
    texts = [e for e in evidence.values() if e.kind is EvidenceKind.TEXT]
    assert texts[0].text == "Thông báo lưu trú trên VNeID – lĩnh vực cư trú"

    # A restart on the same data dir: the records are there and the conversation goes on.
    client = await aiohttp_client(create_app(settings))
    again = Browser(client)
    again.user = chat.user
    again.cursor = chat.cursor
    status_text = await again.say("kết quả")
    assert "Đăng ký thông tin: đã hoàn thành" in status_text
    assert "đã nộp" in status_text  # the submission, from the session kept across the restart
    assert len((await records_of(settings))["evidence"]) == 4


async def test_a_returning_person_whose_session_expired_is_still_registered(
    aiohttp_client: Client, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    chat = Browser(client)
    await register(chat)
    await client.close()
    for path in settings.data_dir.glob("state.sqlite3*"):
        path.unlink()  # every session gone, as if they had expired; the records stay

    client = await aiohttp_client(create_app(settings))
    back = Browser(client)
    back.user = chat.user
    assert "Bạn muốn làm gì" in await back.start()
    assert f"Chào {NAME}" in await back.tap("Tham gia thử thách")


async def test_vneid_help_path(client: TestClient[Any, Any], settings: Settings) -> None:
    chat = Browser(client)
    await chat.start()
    assert "VNeID" in await chat.tap("Hướng dẫn VNeID")
    assert "Bước 1" in await chat.tap("Bắt đầu")
    assert "CH Play" in await chat.tap("Android (CH Play)")
    assert "không cài được" in (await chat.tap("Gặp lỗi")).lower()
    assert "Bước 2" in await chat.tap("Cài được rồi")
    await client.close()
    found = await records_of(settings)
    assert all(not row.profile for row in found["participants"])  # nothing personal asked


async def test_a_deep_link_opens_its_flow_and_registration_comes_first(
    client: TestClient[Any, Any],
) -> None:
    chat = Browser(client)
    first = await chat.start(ref="huyhieuso")
    assert "đăng ký" in first.lower() and "đồng ý" in first.lower()


async def test_a_text_file_is_not_an_image_and_nothing_is_stored(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    chat = Browser(client)
    await chat.start()
    status, body = await chat.upload(b"Day la mot tep van ban, khong phai anh.\n", "ghi-chu.png")
    assert status == 400
    assert "không phải là ảnh" in body["error"]
    assert await chat.replies() == []
    files = settings.files_dir
    assert not files.exists() or not any(p.is_file() for p in files.rglob("*"))
    assert await client.app[RUNTIME].store.pending_keys() == []


async def test_a_retried_post_is_processed_once(client: TestClient[Any, Any]) -> None:
    chat = Browser(client)
    await chat.start()
    status, first = await chat.post(text="Đăng ký thông tin", id="retry-me-1")
    status2, second = await chat.post(text="Đăng ký thông tin", id="retry-me-1")
    assert (status, first["duplicate"]) == (202, False)
    assert (status2, second["duplicate"]) == (202, True)
    replies = await chat.replies()
    assert sum("đồng ý" in m["text"].lower() for m in replies) == 1


async def test_bad_requests_get_clear_errors(client: TestClient[Any, Any]) -> None:
    chat = Browser(client)
    status, body = await chat.post(text="   ")
    assert status == 400 and "trống" in body["error"]
    chat.user = "x"
    status, body = await chat.post(text="chào")
    assert status == 400 and "người dùng" in body["error"]
    chat.user, chat.district = secrets.token_urlsafe(18), "khong-co"
    status, body = await chat.post(text="chào")
    assert status == 400 and "đơn vị" in body["error"]
    response = await client.post("/chat/send", data=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status == 415


async def test_districts_media_and_health(client: TestClient[Any, Any], settings: Settings) -> None:
    config = await (await client.get("/chat/config")).json()
    slugs = [d["slug"] for d in config["districts"]]
    assert config["default"] == slugs[0] == "demo" and "tan-phu" in slugs
    chat = Browser(client, district="tan-phu")
    assert "Tân Phú" in await chat.start()

    assert (await client.get("/media/" + "0" * 64 + ".png")).status == 404
    assert (await client.get("/media/..%2Fflows.yaml")).status == 404
    assert (await client.get("/static/../server.py")).status == 404
    health = await (await client.get("/healthz")).json()
    assert health["ok"] is True and health["store"] == "sqlite"
    assert health["flows"] == client.app[RUNTIME].version and len(health["flows"]) == 64
    page = await client.get("/")
    html = await page.text()
    assert page.status == 200 and "chat.js" in html and "http" not in html.replace(
        'name="viewport"', ""
    ).split("<body>")[1]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


async def test_long_poll_returns_as_soon_as_the_bot_answers(client: TestClient[Any, Any]) -> None:
    import asyncio
    import time

    chat = Browser(client)
    await chat.start()

    async def poll() -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        response = await client.get(
            "/chat/messages",
            params={"user": chat.user, "district": "demo", "after": chat.cursor, "wait": "10"},
        )
        return time.monotonic() - started, await response.json()

    waiting = asyncio.ensure_future(poll())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await chat.post(text="Đăng ký thông tin")
    elapsed, data = await asyncio.wait_for(waiting, 5)
    assert elapsed < 3 and data["messages"]
    assert data["cursor"] == data["messages"][-1]["seq"]


def test_web_assets_need_nothing_from_the_internet() -> None:
    web = Path(__file__).resolve().parents[2] / "bots" / "web"
    for name in ("index.html", "chat.js", "chat.css"):
        text = (web / name).read_text(encoding="utf-8")
        for marker in ("http://", "https://", "//cdn", "@import", "fonts.googleapis"):
            assert marker not in text.replace("https?:\\/\\/", ""), (name, marker)


async def test_the_browser_chat_on_redis(
    aiohttp_client: Client, settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    """`LOA_REDIS_URL` set: sessions, inbox and outbox in Redis; records still in SQL."""
    on_redis = replace(settings, redis_url=redis_url, redis_prefix=redis_prefix)
    client = await aiohttp_client(create_app(on_redis))
    assert (await (await client.get("/healthz")).json())["store"] == "redis"
    chat = Browser(client)
    await register(chat)
    await client.close()
    client = await aiohttp_client(create_app(on_redis))
    again = Browser(client)
    again.user, again.cursor = chat.user, chat.cursor
    assert "Đăng ký thông tin: đã hoàn thành" in await again.say("kết quả")
