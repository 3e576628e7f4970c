"""The review queue and decisions: what the organiser sees, what is stored, and the SYSTEM
events that reach the participant's conversation."""

from __future__ import annotations

import re

from sqlalchemy import select

from bots.console.app import console_tick
from bots.console.review import criterion_of
from bots.records.models import (
    AuditEntry,
    EvidenceStatus,
    Review,
    ReviewDecision,
    SubmissionStatus,
)
from bots.records.writer import delete_personal_data
from flows.events import EvidenceSaved, SubmissionSubmitted
from flows.vocab import InboundKind
from tests.console.conftest import CAMPAIGN, GREEN, RED, Client, World, quick_sign_in


def queue_names(html: str) -> list[str]:
    return re.findall(r'<strong class="name">([^<]+)</strong>', html)


async def decide(client: Client, csrf: str, evidence: int, decision: str, reason: str = ""
                 ) -> tuple[int, str]:
    response = await client.post(f"/admin/evidence/{evidence}/decision",
                                 data={"csrf": csrf, "decision": decision, "reason": reason})
    return response.status, await response.text()


async def test_queue_sorts_by_messaging_window(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    html = await (await client.get("/admin/")).text()
    # An's Messenger window closes in 2 h; Bình is on Telegram (no window); Chi's Zalo window
    # (48 h) closed 12 h ago.
    assert queue_names(html) == ["Nguyễn Văn An", "Trần Thị Bình", "Phạm Thu Chi"]
    assert "Messenger: cửa sổ nhắn tin đóng sau 2 giờ" in html
    assert "Telegram: nhắn lúc nào cũng được" in html
    assert "Zalo OA: cửa sổ nhắn tin đã đóng" in html
    oldest = await (await client.get("/admin/?sort=oldest")).text()
    assert queue_names(oldest) == ["Phạm Thu Chi", "Nguyễn Văn An", "Trần Thị Bình"]


async def test_queue_filters(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    by_unit = await (await client.get("/admin/?unit=tan-quy")).text()
    assert queue_names(by_unit) == ["Nguyễn Văn An", "Phạm Thu Chi"]
    by_age = await (await client.get("/admin/?age=1")).text()  # waiting more than a day
    assert queue_names(by_age) == ["Phạm Thu Chi"]
    by_wave = await (await client.get(f"/admin/?campaign={CAMPAIGN}&wave=Đợt 1")).text()
    assert len(queue_names(by_wave)) == 3
    other_wave = await (await client.get(f"/admin/?campaign={CAMPAIGN}&wave=Đợt 9")).text()
    assert queue_names(other_wave) == []
    approved = await (await client.get("/admin/?status=da_duyet")).text()
    assert queue_names(approved) == []
    assert "Không có bài nào." in approved


async def test_submission_page_shows_each_item(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    html = await (await client.get(f"/admin/submissions/{world.submissions['an']}")).text()
    items = await world.items("an")
    for item in items[:2]:
        assert f'src="/admin/evidence/{item.id}/file"' in html
    assert "Thông báo lưu trú trên VNeID – lĩnh vực cư trú" in html  # the text answer
    assert html.index("Bước 1/3") < html.index("Bước 2/3") < html.index("Bước 3/3")
    assert html.count('name="decision" value="accept"') == 3
    assert html.count('name="decision" value="reject"') == 3


async def test_evidence_file_is_private_and_exact(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    item = (await world.items("an"))[0]
    response = await client.get(f"/admin/evidence/{item.id}/file")
    assert response.status == 200
    assert await response.read() == RED
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_reject_sends_the_system_event_to_the_conversation(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    vneid = await world.item("an", "vneid")
    status, _ = await decide(client, csrf, vneid.id, "reject", "Ảnh bị mờ, chụp lại giúp mình")
    assert status == 200
    assert len(world.notified) == 1
    event = world.notified[0]
    key = world.keys["an"]
    assert (event.district, event.channel, event.user_id) == (key.district, key.channel,
                                                              key.user_id)
    assert event.kind is InboundKind.SYSTEM
    assert event.payload == "reject"
    data = dict(event.data)
    assert data["criterion"] == "vneid"
    assert data["reason"] == "Ảnh bị mờ, chụp lại giúp mình"
    assert data["campaign"] == CAMPAIGN
    assert data["item"] == "Bước 1/3"
    async with world.db.reads() as session:
        review = await session.scalar(select(Review))
        audit_rows = (await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "evidence_rejected"))).all()
    assert review is not None and review.decision is ReviewDecision.REJECT
    assert event.message_id == f"review:{review.id}"
    assert review.notified_at == world.clock()
    assert (await world.item("an", "vneid")).status is EvidenceStatus.REJECTED
    # Back to draft: what they send again joins this submission.
    assert (await world.submission("an")).status is SubmissionStatus.DRAFT
    assert [(a.actor, a.participant_id, a.detail["evidence"]) for a in audit_rows] == [
        (f"organiser:{world.organisers['org_a']}", world.participants["an"], vneid.id)
    ]
    assert "Ảnh bị mờ" not in str(audit_rows[0].detail)  # reasons stay out of the log


async def test_reject_needs_a_reason(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    vneid = await world.item("an", "vneid")
    status, html = await decide(client, csrf, vneid.id, "reject", "   ")
    assert status == 409
    assert "Hãy ghi lý do trả lại" in html
    assert world.notified == []
    assert (await world.item("an", "vneid")).status is EvidenceStatus.PENDING


async def test_resubmission_returns_to_the_queue_in_the_same_submission(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    vneid = await world.item("an", "vneid")
    await decide(client, csrf, vneid.id, "reject", "Ảnh bị mờ")
    waiting = await (await client.get("/admin/?status=cho_gui_lai")).text()
    assert "Nguyễn Văn An" not in waiting  # two other items still wait for review
    for criterion in ("thanh_toan", "dich_vu_cong"):
        await decide(client, csrf, (await world.item("an", criterion)).id, "accept")
    assert (await world.submission("an")).status is SubmissionStatus.DRAFT
    assert queue_names(await (await client.get("/admin/?status=cho_gui_lai")).text()) == [
        "Nguyễn Văn An"]
    assert "Nguyễn Văn An" not in queue_names(await (await client.get("/admin/")).text())
    # The engine takes them back to the step; they send a new picture; the flow submits.
    world.clock.advance(minutes=20)
    await world.say("an", "an-4", EvidenceSaved(CAMPAIGN, "vneid", attachment=world.image(GREEN)))
    await world.say("an", "an-5", SubmissionSubmitted(CAMPAIGN, "Đợt 1"))
    submission = await world.submission("an")
    assert submission.status is SubmissionStatus.SUBMITTED
    assert submission.submitted_at == world.clock()
    assert queue_names(await (await client.get("/admin/")).text())[0] == "Nguyễn Văn An"
    html = await (await client.get(f"/admin/submissions/{submission.id}")).text()
    assert "Các lần gửi trước (1)" in html and "trả lại: Ảnh bị mờ" in html
    new = await world.item("an", "vneid")
    assert new.id != vneid.id and new.status is EvidenceStatus.PENDING
    status, _ = await decide(client, csrf, new.id, "accept")
    assert status == 200
    assert (await world.submission("an")).status is SubmissionStatus.APPROVED
    assert [e.payload for e in world.notified] == ["reject", "approve"]


async def test_approving_every_item_approves_the_submission(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    items = await world.items("binh")
    for item in items[:-1]:
        status, html = await decide(client, csrf, item.id, "accept")
        assert status == 200 and "Đã lưu quyết định." in html
    assert world.notified == []
    assert (await world.submission("binh")).status is SubmissionStatus.SUBMITTED
    status, html = await decide(client, csrf, items[-1].id, "accept")
    assert "Bài đã được duyệt" in html
    assert (await world.submission("binh")).status is SubmissionStatus.APPROVED
    assert len(world.notified) == 1
    event = world.notified[0]
    assert event.kind is InboundKind.SYSTEM and event.payload == "approve"
    assert dict(event.data)["campaign"] == CAMPAIGN
    assert event.user_id == world.keys["binh"].user_id
    async with world.db.reads() as session:
        actions = [a.action for a in (await session.scalars(
            select(AuditEntry).where(AuditEntry.actor.like("organiser:%"))
            .order_by(AuditEntry.id))).all()]
    assert actions.count("evidence_accepted") == 3
    assert actions.count("submission_approved") == 1
    # Decided is decided: no second approval, no second event.
    status, html = await decide(client, csrf, items[0].id, "reject", "đổi ý")
    assert status == 409 and "đã được duyệt" in html
    assert len(world.notified) == 1


async def test_accept_all(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    response = await client.post(f"/admin/submissions/{world.submissions['chi']}/accept-all",
                                 data={"csrf": csrf})
    assert response.status == 200
    assert {i.status for i in await world.items("chi")} == {EvidenceStatus.ACCEPTED}
    assert (await world.submission("chi")).status is SubmissionStatus.APPROVED
    assert [e.payload for e in world.notified] == ["approve"]


async def test_second_rejection_waits_for_the_first_answer(client: Client, world: World) -> None:
    """The engine sends someone back to one evidence step at a time."""
    csrf = await quick_sign_in(client, world, "org_a")
    await decide(client, csrf, (await world.item("an", "vneid")).id, "reject", "Ảnh mờ")
    await decide(client, csrf, (await world.item("an", "thanh_toan")).id, "reject",
                 "Không phải mã QR ngân hàng")
    assert [dict(e.data)["criterion"] for e in world.notified] == ["vneid"]
    await console_tick(world.deps())
    assert len(world.notified) == 1  # still waiting for the new VNeID picture
    html = await (await client.get(f"/admin/submissions/{world.submissions['an']}")).text()
    assert "sẽ báo người tham gia khi họ gửi xong mục trước" in html
    world.clock.advance(minutes=5)
    await world.say("an", "an-4", EvidenceSaved(CAMPAIGN, "vneid", attachment=world.image(GREEN)))
    await world.say("an", "an-5", SubmissionSubmitted(CAMPAIGN, "Đợt 1"))
    await console_tick(world.deps())
    assert [dict(e.data)["criterion"] for e in world.notified] == ["vneid", "thanh_toan"]
    assert dict(world.notified[1].data)["reason"] == "Không phải mã QR ngân hàng"
    assert (await world.submission("an")).status is SubmissionStatus.DRAFT
    await console_tick(world.deps())
    assert len(world.notified) == 2  # sent once


async def test_a_failed_notify_is_sent_by_the_periodic_task(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    world.fail_notify = True
    status, _ = await decide(client, csrf, (await world.item("an", "vneid")).id, "reject",
                             "Ảnh mờ")
    assert status == 200  # the decision is stored; the conversation hears of it later
    assert (await world.item("an", "vneid")).status is EvidenceStatus.REJECTED
    assert world.notified == []
    world.fail_notify = False
    await console_tick(world.deps())
    assert [e.payload for e in world.notified] == ["reject"]


async def test_an_accepted_item_can_still_be_rejected_before_approval(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    item = await world.item("an", "thanh_toan")
    await decide(client, csrf, item.id, "accept")
    status, _ = await decide(client, csrf, item.id, "reject", "Tài khoản không đứng tên bạn")
    assert status == 200
    assert (await world.item("an", "thanh_toan")).status is EvidenceStatus.REJECTED
    assert [dict(e.data)["criterion"] for e in world.notified] == ["thanh_toan"]


async def test_deleting_personal_data_after_a_review_still_works(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    await decide(client, csrf, (await world.item("an", "vneid")).id, "reject", "Ảnh mờ")
    await delete_personal_data(world.db.sessions, world.keys["an"], world.clock(),
                               files=world.files)
    assert await world.items("an") == []
    async with world.db.reads() as session:
        assert (await session.scalars(select(Review))).all() == []  # reasons went with them
    response = await client.get(f"/admin/submissions/{world.submissions['an']}")
    assert response.status == 200
    assert "chưa có minh chứng nào" in await response.text()


def test_criterion_labels(world: World) -> None:
    label = criterion_of(world.bundle, CAMPAIGN, "thanh_toan")
    assert label.item == "Bước 2/3"
    assert label.label.startswith("Bước 2/3: Chụp mã QR")
    assert label.order < criterion_of(world.bundle, CAMPAIGN, "dich_vu_cong").order
    unknown = criterion_of(world.bundle, CAMPAIGN, "khong_co")
    assert unknown.item == "khong co"


async def test_next_submission_link_after_the_last_decision(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    response = await client.post(f"/admin/submissions/{world.submissions['an']}/accept-all",
                                 data={"csrf": csrf})
    html = await response.text()
    assert f'href="/admin/submissions/{world.submissions["binh"]}">Bài tiếp theo' in html
