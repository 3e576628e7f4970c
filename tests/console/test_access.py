"""Access control on every console route: signed out → login; another subtree → 404 (never
403, never a hint); POST without the CSRF token → 403."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bots.console.access import Access, scope_of_roots, unit_expr
from bots.records.models import AuditEntry, ChannelIdentity, EvidenceStatus, Handover, Review
from flows.events import ConsentRecorded, FieldSaved
from flows.vocab import Channel, ConversationKey
from tests.console.conftest import Client, World, quick_sign_in


def get_routes(world: World, who: str) -> list[str]:
    """Every GET route that shows one person's data, for participant `who`."""
    sid = world.submissions[who]
    pid = world.participants[who]
    return [
        f"/admin/submissions/{sid}",
        f"/admin/participants/{pid}",
    ]


async def evidence_ids(world: World, who: str) -> list[int]:
    return [i.id for i in await world.items(who)]


def post_routes(world: World, who: str, evidence: int) -> list[tuple[str, dict[str, str]]]:
    sid = world.submissions[who]
    pid = world.participants[who]
    return [
        (f"/admin/evidence/{evidence}/decision", {"decision": "accept"}),
        (f"/admin/evidence/{evidence}/decision", {"decision": "reject", "reason": "Ảnh mờ"}),
        (f"/admin/submissions/{sid}/accept-all", {}),
        (f"/admin/participants/{pid}/take", {}),
        (f"/admin/participants/{pid}/release", {}),
        (f"/admin/participants/{pid}/message", {"text": "Chào bạn"}),
    ]


ALL_GET = [
    "/admin/",
    "/admin/export.csv",
    "/admin/submissions/1",
    "/admin/evidence/1/file",
    "/admin/participants/1",
    "/admin/handovers",
    "/admin/audit",
    "/admin/organisers",
    "/admin/password",
]
ALL_POST = [
    "/admin/logout",
    "/admin/submissions/1/accept-all",
    "/admin/evidence/1/decision",
    "/admin/participants/1/take",
    "/admin/participants/1/release",
    "/admin/participants/1/message",
    "/admin/organisers",
    "/admin/organisers/1",
    "/admin/password",
]


@pytest.mark.parametrize("path", ALL_GET)
async def test_signed_out_get_goes_to_login(client: Client, path: str) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 303
    location = response.headers["Location"]
    assert location.startswith("/admin/login?next=")
    page = await client.get(location)
    assert page.status == 200
    assert "Đăng nhập" in await page.text()


@pytest.mark.parametrize("path", ALL_POST)
async def test_signed_out_post_goes_to_login_and_changes_nothing(
    client: Client, world: World, path: str
) -> None:
    response = await client.post(path, data={"decision": "accept"}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/admin/login")
    assert world.notified == []
    assert [i.status for i in await world.items("an")] == [EvidenceStatus.PENDING] * 3


async def test_a_forged_cookie_is_signed_out(client: Client) -> None:
    client.session.cookie_jar.update_cookies({"loa_admin": "not-a-session"})
    response = await client.get("/admin/", allow_redirects=False)
    assert response.status == 303


async def test_own_district_is_visible(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    for path in get_routes(world, "an"):
        response = await client.get(path)
        assert response.status == 200, path
        assert "Nguyễn Văn An" in await response.text()
    for evidence in (await evidence_ids(world, "an"))[:2]:  # the images
        response = await client.get(f"/admin/evidence/{evidence}/file")
        assert response.status == 200


async def test_other_district_is_404_everywhere(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    for path in get_routes(world, "cuong"):
        response = await client.get(path)
        assert response.status == 404, path
        text = await response.text()
        assert "Không tìm thấy" in text
        assert "Lê Văn Cường" not in text
    for evidence in await evidence_ids(world, "cuong"):
        response = await client.get(f"/admin/evidence/{evidence}/file")
        assert response.status == 404
        assert response.headers["Content-Type"].startswith("text/html")


async def test_other_district_posts_are_404_and_change_nothing(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    first = (await evidence_ids(world, "cuong"))[0]
    for path, fields in post_routes(world, "cuong", first):
        response = await client.post(path, data={"csrf": csrf, **fields})
        assert response.status == 404, path
    assert world.notified == []
    assert world.sent == []
    assert {i.status for i in await world.items("cuong")} == {EvidenceStatus.PENDING}
    identity = await world.identity("cuong")
    assert identity.paused is False
    async with world.db.reads() as session:
        assert await session.scalar(select(func.count()).select_from(Review)) == 0
        assert await session.scalar(select(func.count()).select_from(Handover)) == 0


async def test_guessed_ids_are_404_like_other_districts(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    for path in ("/admin/submissions/999999", "/admin/participants/424242",
                 "/admin/evidence/31337/file", "/admin/submissions/abc",
                 "/admin/submissions/99999999999999999999999", "/admin/nowhere"):
        response = await client.get(path)
        assert response.status == 404, path
    response = await client.post("/admin/evidence/999999/decision",
                                 data={"csrf": csrf, "decision": "accept"})
    assert response.status == 404


async def test_the_other_organiser_sees_the_mirror_image(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_b")
    assert (await client.get(f"/admin/submissions/{world.submissions['cuong']}")).status == 200
    assert (await client.get(f"/admin/submissions/{world.submissions['an']}")).status == 404
    an_image = (await evidence_ids(world, "an"))[0]
    assert (await client.get(f"/admin/evidence/{an_image}/file")).status == 404


async def test_queue_and_export_only_list_the_own_subtree(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    page = await (await client.get("/admin/?status=tat_ca")).text()
    assert "Nguyễn Văn An" in page and "Trần Thị Bình" in page and "Phạm Thu Chi" in page
    assert "Lê Văn Cường" not in page
    assert "Bình Tân" not in page.split("<main")[1]  # not even as a filter choice
    export = await client.get("/admin/export.csv?status=tat_ca")
    assert export.status == 200
    body = (await export.read()).decode("utf-8-sig")
    assert "Nguyễn Văn An" in body and "Lê Văn Cường" not in body
    assert len(body.strip().splitlines()) == 4  # header + 3 submissions of Tân Phú


async def test_unit_filter_outside_the_scope_is_ignored(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    page = await (await client.get("/admin/?unit=an-lac")).text()
    assert "Lê Văn Cường" not in page
    assert "Nguyễn Văn An" in page  # the filter was dropped, not widened


async def test_admin_of_the_city_sees_both_districts(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "admin")
    for who in ("an", "cuong"):
        assert (await client.get(f"/admin/submissions/{world.submissions[who]}")).status == 200


async def test_reviewer_is_limited_to_its_units(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "reviewer")
    assert (await client.get(f"/admin/submissions/{world.submissions['an']}")).status == 200
    assert (await client.get(f"/admin/submissions/{world.submissions['chi']}")).status == 200
    # Bình is in Tân Phú too, but in another unit (Phú Thọ Hòa).
    assert (await client.get(f"/admin/submissions/{world.submissions['binh']}")).status == 404
    page = await (await client.get("/admin/")).text()
    assert "Nguyễn Văn An" in page and "Trần Thị Bình" not in page
    # Reviewing is allowed; talking to people and exporting are not (inside the scope: 403).
    response = await client.post(f"/admin/participants/{world.participants['an']}/take",
                                 data={"csrf": csrf})
    assert response.status == 403
    assert (await world.identity("an")).paused is False
    assert (await client.get("/admin/export.csv")).status == 403
    assert (await client.get("/admin/organisers")).status == 403
    assert (await client.get("/admin/audit")).status == 403


async def test_post_without_or_with_a_wrong_csrf_token_is_403(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "org_a")
    first = (await evidence_ids(world, "an"))[0]
    for path, fields in post_routes(world, "an", first):
        missing = await client.post(path, data=fields)
        assert missing.status == 403, path
        wrong = await client.post(path, data={"csrf": csrf[:-1] + "0", **fields})
        assert wrong.status == 403, path
    for path in ("/admin/logout", "/admin/password", "/admin/organisers"):
        assert (await client.post(path, data={})).status == 403, path
    # A token of another session does not work either.
    other = await quick_sign_in(client, world, "org_b")
    csrf = await quick_sign_in(client, world, "org_a")
    response = await client.post(f"/admin/evidence/{first}/decision",
                                 data={"csrf": other, "decision": "accept"})
    assert response.status == 403
    assert world.notified == []
    assert {i.status for i in await world.items("an")} == {EvidenceStatus.PENDING}
    # And the right one does.
    response = await client.post(f"/admin/evidence/{first}/decision",
                                 data={"csrf": csrf, "decision": "accept"})
    assert response.status == 200
    assert (await world.items("an"))[0].status is EvidenceStatus.ACCEPTED


async def test_hand_over_of_another_district_is_404(client: Client, world: World) -> None:
    csrf = await quick_sign_in(client, world, "org_b")
    pid = world.participants["an"]
    for action in ("take", "release", "message"):
        response = await client.post(f"/admin/participants/{pid}/{action}",
                                     data={"csrf": csrf, "text": "Chào"})
        assert response.status == 404
    assert (await world.identity("an")).paused is False
    assert world.notified == [] and world.sent == []


async def test_a_province_channel_participant_is_seen_by_the_district_of_their_unit(
    client: Client, world: World
) -> None:
    """Someone who talked to the city's own channel and chose a Tân Phú unit is Tân Phú's."""
    world.keys["dung"] = ConversationKey("tp-hcm", Channel.TELEGRAM, "tg-dung")
    world.keys["em"] = ConversationKey("tp-hcm", Channel.TELEGRAM, "tg-em")
    await world.say("dung", "dung-1", ConsentRecorded(True, "?"), FieldSaved("ho_ten", "Đỗ Dung"),
                    FieldSaved("don_vi", "tan-quy"))
    await world.say("em", "em-1", ConsentRecorded(True, "?"), FieldSaved("ho_ten", "Vũ Em"),
                    FieldSaved("don_vi", "an-lac"))
    async with world.db.reads() as session:
        ids = {
            name: await session.scalar(
                select(ChannelIdentity.participant_id).where(
                    ChannelIdentity.user_id == world.keys[name].user_id
                )
            )
            for name in ("dung", "em")
        }
    await quick_sign_in(client, world, "org_a")
    assert (await client.get(f"/admin/participants/{ids['dung']}")).status == 200
    assert (await client.get(f"/admin/participants/{ids['em']}")).status == 404
    await quick_sign_in(client, world, "org_b")
    assert (await client.get(f"/admin/participants/{ids['dung']}")).status == 404
    assert (await client.get(f"/admin/participants/{ids['em']}")).status == 200


async def test_scope_rule(world: World) -> None:
    districts = world.bundle.districts
    tan_phu = scope_of_roots(["tan-phu"], world.tree, districts)
    assert tan_phu.allows("tan-phu", None)
    assert tan_phu.allows("tp-hcm", "phu-tho-hoa")
    assert not tan_phu.allows("tp-hcm", "an-lac")
    assert not tan_phu.allows("binh-tan", "tan-quy")  # a unit cannot pull a district's people
    unit = scope_of_roots(["tan-quy"], world.tree, districts)
    assert unit.allows("tan-phu", "tan-quy") and not unit.allows("tan-phu", "phu-tho-hoa")
    assert scope_of_roots(["no-such-node"], world.tree, districts).empty
    # The SQL form of the rule agrees with the Python one on the seeded people.
    access = Access(tan_phu, unit_expr(world.bundle))
    async with world.db.reads() as session:
        for who, expected in (("an", True), ("binh", True), ("cuong", False)):
            found = await access.participant(session, world.participants[who])
            assert (found is not None) is expected, who


async def test_views_are_audited_with_the_viewer(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    image = (await evidence_ids(world, "an"))[0]
    await client.get(f"/admin/submissions/{world.submissions['an']}")
    await client.get(f"/admin/evidence/{image}/file")
    await client.get(f"/admin/participants/{world.participants['an']}")
    await client.get(f"/admin/evidence/{(await evidence_ids(world, 'cuong'))[0]}/file")  # 404
    async with world.db.reads() as session:
        rows = (await session.scalars(
            select(AuditEntry).where(AuditEntry.actor == f"organiser:{world.organisers['org_a']}")
            .order_by(AuditEntry.id)
        )).all()
    actions = [(r.action, r.participant_id) for r in rows]
    pid = world.participants["an"]
    assert ("submission_viewed", pid) in actions
    assert ("evidence_viewed", pid) in actions
    assert ("participant_viewed", pid) in actions
    assert all(r.participant_id == pid for r in rows)  # the 404 wrote nothing
    viewed = next(r for r in rows if r.action == "evidence_viewed")
    assert viewed.detail["evidence"] == image and viewed.detail["ip"] == "127.0.0.1"


async def test_the_bare_prefix_leads_into_the_console(client: Client) -> None:
    response = await client.get("/admin", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/admin/"
