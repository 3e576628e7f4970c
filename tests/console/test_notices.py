"""District-level notices in the console (/admin/thong-bao): what the channel health check, the
Zalo token keeper, the delivery policy and the operations service tell a district's organisers
without a participant. Seen by the district's organisers and those above it, never by a sibling
district (404 there); a banner with the count on every page; marked handled with a CSRF-checked,
audited POST; gone once the health check finds the channel working again."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from adapters.base import RecipientUnreachable
from bots.channel_health import ChannelHealth
from bots.channel_state import ChannelState
from bots.channels import ChannelsConfig, TelegramBot
from bots.console import auth
from bots.delivery import record_undelivered
from bots.ops.service import notify_organisers
from bots.records.models import (
    AuditEntry,
    NotificationKind,
    OrganiserNotification,
    OrganiserRole,
)
from flows.vocab import Channel, ConversationKey, Outbound
from tests.console.conftest import NOW, Client, World, password_hash, quick_sign_in

TG_TOKEN = "123456789:FAKE-telegram-token_0001"
HOOK = "https://loa.example.vn/webhooks/telegram/tan-phu"
BANNER = re.compile(r'class="notices-banner".*?<strong>(\d+) thông báo chưa xử lý</strong>', re.S)
EMPTY = "Không có thông báo nào chưa xử lý."


@dataclass
class FakeTransport:
    """Telegram's getWebhookInfo as the health check reads it."""

    info: dict[str, Any] = field(default_factory=lambda: {"url": HOOK})

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert method == "getWebhookInfo"
        return {"ok": True, "result": dict(self.info)}


def health(world: World, transport: FakeTransport) -> ChannelHealth:
    """The real health check over Tân Phú's webhook-mode Telegram bot (only)."""
    channels = SimpleNamespace(
        messenger=None,
        config=ChannelsConfig(telegram=(TelegramBot("tan-phu", TG_TOKEN, "secret"),)),
        telegram_transports={"tan-phu": transport},
        zalobot={},
        zalo_keeper=None,
        state=ChannelState(world.db),
        clock=world.clock,
    )
    return ChannelHealth(channels)  # type: ignore[arg-type]


def failing() -> FakeTransport:
    return FakeTransport({
        "url": HOOK,
        "last_error_date": int(NOW.timestamp()) - 60,
        "last_error_message": "Wrong response from the webhook: 502 Bad Gateway",
        "pending_update_count": 7,
    })


async def open_rows(world: World) -> list[OrganiserNotification]:
    async with world.db.reads() as session:
        return list((await session.scalars(
            select(OrganiserNotification).where(
                OrganiserNotification.participant_id.is_(None),
                OrganiserNotification.handled_at.is_(None),
            ).order_by(OrganiserNotification.id)
        )).all())


def banner(html: str) -> int:
    found = BANNER.search(html)
    return int(found.group(1)) if found else 0


async def page(client: Client, path: str = "/admin/thong-bao") -> str:
    response = await client.get(path)
    assert response.status == 200, path
    return await response.text()


async def test_a_health_finding_is_seen_by_its_district_and_above_only(
    client: Client, world: World
) -> None:
    transport = failing()
    await health(world, transport).check_once()
    [notice] = await open_rows(world)
    assert notice.district == "tan-phu" and notice.kind is NotificationKind.CHANNEL

    for who in ("org_a", "admin_a", "admin"):  # Tân Phú's own, and the city above it
        await quick_sign_in(client, world, who)
        html = await page(client)
        assert "Telegram không gửi được tin đến Loa lúc 14:59 10/03" in html, who
        assert "Wrong response from the webhook: 502 Bad Gateway" in html
        assert "Còn 7 tin đang chờ" in html
        assert "Lúc 15:00 10/03/2026" in html  # raised at NOW, Vietnamese time
        assert "Quận Đoàn Tân Phú" in html
        assert "Loa tự đóng thông báo này" in html
        assert f'action="/admin/thong-bao/{notice.id}/da-xu-ly"' in html
        for path in ("/admin/", "/admin/bao-cao", "/admin/handovers", "/admin/password"):
            assert banner(await page(client, path)) == 1, (who, path)
        assert banner(html) == 0  # the list itself has no banner, only the menu's count
        assert '<span class="count" aria-label="1 chưa xử lý">1</span>' in html

    for who in ("org_b", "reviewer"):  # Bình Tân; a reviewer limited to a ward of Tân Phú
        csrf = await quick_sign_in(client, world, who)
        html = await page(client)
        assert EMPTY in html and "502 Bad Gateway" not in html, who
        assert banner(await page(client, "/admin/")) == 0
        assert 'class="count"' not in html
        response = await client.post(f"/admin/thong-bao/{notice.id}/da-xu-ly",
                                     data={"csrf": csrf})
        assert response.status == 404, who
    assert [n.id for n in await open_rows(world)] == [notice.id]

    # The webhook works again: the check closes the notice and it leaves every list.
    transport.info = {"url": HOOK}
    await health(world, transport).check_once()
    assert await open_rows(world) == []
    await quick_sign_in(client, world, "org_a")
    assert EMPTY in await page(client)
    assert banner(await page(client, "/admin/")) == 0


async def test_marking_handled_removes_it_and_is_audited(client: Client, world: World) -> None:
    transport = failing()
    await health(world, transport).check_once()
    [notice] = await open_rows(world)
    csrf = await quick_sign_in(client, world, "org_a")
    url = f"/admin/thong-bao/{notice.id}/da-xu-ly"

    response = await client.post(url, data={"csrf": "forged"}, allow_redirects=False)
    assert response.status == 403
    response = await client.post(url, data={}, allow_redirects=False)
    assert response.status == 403
    assert [n.id for n in await open_rows(world)] == [notice.id]

    response = await client.post(url, data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/admin/thong-bao?done=handled"
    html = await page(client, response.headers["Location"])
    assert "Đã đánh dấu thông báo là đã xử lý." in html
    assert EMPTY in html and "Telegram không gửi được" not in html
    assert banner(await page(client, "/admin/")) == 0
    assert await open_rows(world) == []
    async with world.db.reads() as session:
        handled = await session.get(OrganiserNotification, notice.id)
        entries = (await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "notice_handled"))).all()
    assert handled is not None and handled.handled_at is not None
    [entry] = entries
    assert entry.actor == f"organiser:{world.organisers['org_a']}"
    assert entry.participant_id is None
    assert entry.detail["notice"] == notice.id
    assert (entry.detail["kind"], entry.detail["district"]) == ("channel", "tan-phu")

    # Again (a second tab): nothing changes, nothing more is audited.
    response = await client.post(url, data={"csrf": csrf}, allow_redirects=False)
    assert response.headers["Location"] == "/admin/thong-bao?done=already"
    async with world.db.reads() as session:
        assert len((await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "notice_handled"))).all()) == 1

    # The city's admin reads it in the audit log.
    await quick_sign_in(client, world, "admin")
    log = await page(client, "/admin/audit")
    assert "Đánh dấu đã xử lý thông báo" in log and f"thông báo #{notice.id} (tan-phu)" in log

    # Marked handled while the webhook still fails: the next check tells them again.
    await health(world, transport).check_once()
    [again] = await open_rows(world)
    assert again.id != notice.id and again.district == "tan-phu"


async def test_every_district_level_kind_is_listed_and_counted_by_subtree(
    client: Client, world: World
) -> None:
    async with world.db.sessions() as session, session.begin():
        session.add(OrganiserNotification(
            district="binh-tan", participant_id=None, kind=NotificationKind.REAUTHORISE,
            created_at=NOW, text="Zalo OA 6666666666666666666 cần cấp quyền lại cho Loa.",
        ))
        # A request tied to a person stays on their page, never here.
        session.add(OrganiserNotification(
            district="tan-phu", participant_id=world.participants["an"],
            kind=NotificationKind.NOTIFY, created_at=NOW, text="Bạn An cần hỗ trợ thêm.",
        ))
    # A message to someone the records do not know failed for good (bots/delivery.py).
    await record_undelivered(
        world.db.sessions, ConversationKey("tan-phu", Channel.TELEGRAM, "tg-unknown"),
        Outbound("Chào bạn, mời bạn tham gia thử thách"), RecipientUnreachable("blocked"), NOW,
    )
    # The operations service writes to the top of the tree (bots/ops/service.py).
    await notify_organisers(world.db.sessions, ["tp-hcm"], "Ổ đĩa máy chủ còn dưới 5%.", now=NOW)
    by_text = {n.text: n for n in await open_rows(world)}
    assert len(by_text) == 3

    async def seen(who: str) -> tuple[int, str]:
        await quick_sign_in(client, world, who)
        return banner(await page(client, "/admin/")), await page(client)

    count, html = await seen("admin")
    assert count == 3
    for label in ("Cần cấp quyền lại", "Tin nhắn không gửi được", "Thông báo"):
        assert f">{label}</span>" in html
    assert "Ổ đĩa máy chủ còn dưới 5%." in html and "Quận Đoàn Bình Tân" in html
    assert "Bạn An cần hỗ trợ thêm." not in html

    count, html = await seen("org_a")
    assert count == 1
    assert "Không gửi được tin nhắn qua Telegram" in html
    assert "6666666666666666666" not in html and "dưới 5%" not in html

    count, html = await seen("org_b")
    assert count == 1
    assert "cần cấp quyền lại" in html and "Không gửi được tin nhắn" not in html

    # org_b: the city's notice, Tân Phú's, a person's and an unknown id all answer 404.
    csrf = await quick_sign_in(client, world, "org_b")
    an_notice = await _participant_notice(world)
    for notice_id in (by_text["Ổ đĩa máy chủ còn dưới 5%."].id,
                      next(n.id for t, n in by_text.items() if t.startswith("Không gửi")),
                      an_notice, 999_999, "abc"):
        response = await client.post(f"/admin/thong-bao/{notice_id}/da-xu-ly",
                                     data={"csrf": csrf})
        assert response.status == 404, notice_id
        assert "Không tìm thấy" in await response.text()
    # ... even for Tân Phú's own organiser, a person's notice is not handled here.
    csrf = await quick_sign_in(client, world, "org_a")
    response = await client.post(f"/admin/thong-bao/{an_notice}/da-xu-ly", data={"csrf": csrf})
    assert response.status == 404
    assert len(await open_rows(world)) == 3


async def _participant_notice(world: World) -> int:
    async with world.db.reads() as session:
        found = await session.scalar(select(OrganiserNotification.id).where(
            OrganiserNotification.participant_id.is_not(None)))
    assert found is not None
    return found


async def test_a_reviewer_sees_the_district_notices_but_does_not_mark_them(
    client: Client, world: World
) -> None:
    await health(world, failing()).check_once()
    [notice] = await open_rows(world)
    async with world.db.sessions() as session, session.begin():
        account = await auth.create_organiser(
            session, login="cham.tanphu@example.com", password_hash=password_hash(),
            role=OrganiserRole.REVIEWER, org="tan-phu", now=NOW, name="Người chấm Tân Phú",
            units=[], created_by="test",
        )
        world.organisers["reviewer_all"] = account.id
    csrf = await quick_sign_in(client, world, "reviewer_all")
    html = await page(client)
    assert "Telegram không gửi được tin đến Loa" in html
    assert "da-xu-ly" not in html and "Tài khoản người chấm chỉ xem được" in html
    response = await client.post(f"/admin/thong-bao/{notice.id}/da-xu-ly", data={"csrf": csrf})
    assert response.status == 403
    assert [n.id for n in await open_rows(world)] == [notice.id]


async def test_signed_out_is_sent_to_login(client: Client, world: World) -> None:
    response = await client.get("/admin/thong-bao", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/admin/login")
