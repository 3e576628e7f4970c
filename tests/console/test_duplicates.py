"""Possible duplicates, one test per reason, and only within what the organiser may see."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bots.console.access import Access
from bots.console.duplicates import Duplicate, find_duplicates, flagged, hamming
from bots.records.models import Organiser, Participant, Submission
from tests.console.conftest import PHASH_NEAR, PHASH_RED, Client, World, quick_sign_in


async def access_of(session: AsyncSession, world: World, viewer: str) -> Access:
    organiser = await session.get(Organiser, world.organisers[viewer])
    assert organiser is not None
    return Access.of(organiser, world.tree, world.bundle)


async def duplicates_for(world: World, who: str, viewer: str) -> list[Duplicate]:
    async with world.db.reads() as session:
        submission = await session.get(Submission, world.submissions[who])
        participant = await session.get(Participant, world.participants[who])
        assert submission is not None and participant is not None
        access = await access_of(session, world, viewer)
        return await find_duplicates(session, access, submission, participant)


def reasons(found: list[Duplicate], other: int) -> set[str]:
    return {d.reason for d in found if d.other_participant_id == other}


async def test_same_file(world: World) -> None:
    found = await duplicates_for(world, "an", "org_a")
    assert "sha256" in reasons(found, world.participants["binh"])
    vneid = await world.item("an", "vneid")
    match = next(d for d in found if d.reason == "sha256")
    assert match.evidence_id == vneid.id
    assert match.other_submission_id == world.submissions["binh"]
    assert match.strong


async def test_same_platform_file_id(world: World) -> None:
    found = await duplicates_for(world, "an", "org_a")
    match = [d for d in found if d.reason == "platform_id"]
    assert [(d.other_participant_id, d.evidence_id) for d in match] == [
        (world.participants["binh"], (await world.item("an", "thanh_toan")).id)
    ]


async def test_same_qr_payload(world: World) -> None:
    found = await duplicates_for(world, "binh", "org_a")
    assert "qr" in reasons(found, world.participants["an"])


async def test_same_phone(world: World) -> None:
    found = await duplicates_for(world, "an", "org_a")
    match = [d for d in found if d.reason == "phone"]
    assert [(d.other_participant_id, d.other_submission_id, d.evidence_id) for d in match] == [
        (world.participants["binh"], world.submissions["binh"], None)
    ]


async def test_same_email_across_districts_only_for_who_sees_both(world: World) -> None:
    # Cường (Bình Tân) registered with An's email and sent An's very picture.
    for_tan_phu = await duplicates_for(world, "an", "org_a")
    assert reasons(for_tan_phu, world.participants["cuong"]) == set()
    for_city = await duplicates_for(world, "an", "admin")
    assert reasons(for_city, world.participants["cuong"]) == {"sha256", "email"}


async def test_near_image_is_a_weak_hint(world: World) -> None:
    assert hamming(PHASH_RED, PHASH_NEAR) == 2
    found = await duplicates_for(world, "chi", "org_a")
    near = [d for d in found if d.reason == "phash"]
    assert {d.other_participant_id for d in near} == {world.participants["an"],
                                                      world.participants["binh"]}
    assert all(not d.strong and d.distance == 2 for d in near)
    # An exact copy is reported as the same file, not again as a near match.
    an = await duplicates_for(world, "an", "org_a")
    assert not [d for d in an if d.reason == "phash" and
                d.other_participant_id == world.participants["binh"] and
                d.evidence_id == (await world.item("an", "vneid")).id]


async def test_nobody_is_their_own_duplicate(world: World) -> None:
    found = await duplicates_for(world, "chi", "org_a")
    assert world.participants["chi"] not in {d.other_participant_id for d in found}
    assert {d.reason for d in found} == {"phash"}


async def test_queue_flags_and_page_links(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    html = await (await client.get(f"/admin/submissions/{world.submissions['an']}")).text()
    assert "Có thể trùng lặp" in html
    assert "cùng một tệp ảnh; cùng mã tệp trên nền tảng (ảnh được chuyển tiếp); " \
        "cùng nội dung mã QR; cùng số điện thoại" in html
    assert f'href="/admin/submissions/{world.submissions["binh"]}"' in html
    assert "Lê Văn Cường" not in html  # Bình Tân's copy stays invisible here
    assert "cùng email" not in html
    queue = await (await client.get("/admin/")).text()
    # An and Bình share strong signs; Chi's picture is only near An's (a hint on her page).
    assert queue.count(">Có thể trùng</span>") == 2
    async with world.db.reads() as session:
        access = await access_of(session, world, "org_a")
        flags = await flagged(session, access, list(world.submissions.values()))
    assert flags[world.submissions["an"]] == {"sha256", "platform_id", "qr", "phone"}
    assert world.submissions["chi"] not in flags
