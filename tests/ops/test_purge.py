"""The retention purge and "xóa dữ liệu của tôi": evidence and personal data gone (down to the
bytes of the SQLite files), anonymous counts intact, shared files kept, every purge audited."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bots.ops.purge import PurgeRefused, purge, sqlite_checkpoint, unit_fields
from bots.records.models import (
    AuditEntry,
    EvidenceItem,
    Participant,
    Review,
    ReviewDecision,
    Submission,
)
from bots.records.writer import apply, load_profile
from bots.reports.queries import progress
from bots.runtime import Runtime
from bots.server import build_app
from flows.events import DataDeletionRequested

from .browser import Browser
from .conftest import FLOWS, PEOPLE, REPO_ROOT, World, file_hashes, table_dump

AFTER_RETENTION = datetime(2026, 6, 1, tzinfo=UTC)
WAVES = (None, "Đợt 1", "Đợt 2")


def forms(text: str) -> list[bytes]:
    """How a string can sit in the SQLite file: UTF-8 (plain columns) and JSON-escaped (the
    profile, serialised with ensure_ascii)."""
    return [text.encode(), json.dumps(text).strip('"').encode()]


def scan(path: Path, text: str) -> bool:
    """Whether `text` occurs anywhere in the database file or its write-ahead log."""
    found = False
    for name in (path, path.with_name(path.name + "-wal")):
        if name.exists():
            data = name.read_bytes()
            found = found or any(form in data for form in forms(text))
    return found


def personal(person: str) -> list[str]:
    p = PEOPLE[person]
    return [p.name, p.email, p.phone]


async def counts(world: World, campaign: str = "cds_2023") -> list[tuple[Any, ...]]:
    """What reports show: per node and wave, registered, submitted and approved."""
    rows = []
    for wave in WAVES:
        for row in await progress(world.db, campaign, wave=wave):
            rows.append((wave, row.slug, row.registered, row.submitted, row.approved))
    return rows


async def _purge(world: World, **kwargs: Any) -> Any:
    compiled = world.flows.compiled
    kwargs.setdefault("now", AFTER_RETENTION)
    return await purge(
        world.db, world.files, kwargs.pop("campaign", "cds_2023"), compiled.campaigns,
        unit_field_names=unit_fields(compiled.field_kinds), **kwargs,
    )


async def test_purge_keeps_the_counts_and_leaves_no_personal_data(world: World) -> None:
    before = await counts(world)
    assert ("Đợt 2", "tan-quy", 2, 1, 1) in before  # a figure worth keeping
    async with world.db.reads() as session:
        submissions = await session.scalar(select(func.count()).select_from(Submission))
    for person in ("an", "chi", "binh", "dung"):
        for text in personal(person):
            assert scan(world.records_path, text), (person, text)  # the scan can find them

    plan = await _purge(world)

    assert plan.participants == 3
    assert sorted(plan.erased) == sorted([await _pid(world, "an"), await _pid(world, "chi")])
    assert plan.kept == [await _pid(world, "binh")]  # still in cds_moi, whose retention runs
    assert (plan.evidence_items, plan.files_deleted, plan.files_shared) == (5, 3, 1)
    # The figures reports are made of did not move.
    assert await counts(world) == before
    async with world.db.reads() as session:
        assert await session.scalar(select(func.count()).select_from(Submission)) == submissions
        approvals = (await session.scalars(
            select(Review).where(Review.decision == ReviewDecision.APPROVE))).all()
        assert len(approvals) == 2 and all(r.reason is None for r in approvals)
        left = (await session.scalars(select(EvidenceItem.criterion))).all()
        assert sorted(left) == ["anh_DUNG", "anh_SHARED"]  # cds_moi's only
        an = await session.get(Participant, await _pid(world, "an"))
        assert an is not None
        assert an.profile == {"don_vi": "tan-quy"}
        assert (an.name, an.phone, an.email, an.consent_text) == (None,) * 4
        assert an.purged_at == AFTER_RETENTION and an.deleted_at is None
        audit = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert await load_profile(world.db.reads, world.keys["an"]) == {}  # starts over
    assert await load_profile(world.db.reads, world.keys["binh"]) != {}
    # Files: each campaign's own screenshots gone, the one cds_moi still uses kept.
    for label, present in (("AN", False), ("CHI", False), ("BINH", False),
                           ("SHARED", True), ("DUNG", True)):
        assert world.files.exists(world.shas[label]) is present, label
    # Not a byte left in the database files.
    for person in ("an", "chi"):
        for text in personal(person):
            assert not scan(world.records_path, text), (person, text)
    assert not scan(world.records_path, "Đăng ký khai sinh trực tuyến cho em gái")
    for text in personal("binh") + personal("dung"):
        assert scan(world.records_path, text)
    # Audited: the purge as a whole, and each person.
    purged = [e for e in audit if e.action == "campaign_purged"]
    assert len(purged) == 1 and purged[0].actor == "ops:purge"
    assert purged[0].detail["participants_erased"] == 2
    assert purged[0].detail["files_deleted"] == 3
    assert sorted(e.participant_id for e in audit if e.action == "personal_data_purged") == sorted(
        plan.erased
    )

    again = await _purge(world)  # nothing left to do
    assert (again.erased, again.already, again.evidence_items, again.files_deleted) == (
        [], 2, 0, 0
    )
    assert await counts(world) == before


async def test_purge_on_postgres_keeps_the_counts_and_drops_personal_data(
    pg_world: World,
) -> None:
    world = pg_world
    before = await counts(world)
    plan = await _purge(world)
    assert (len(plan.erased), plan.kept, plan.files_deleted, plan.files_shared) == (
        2, [await _pid(world, "binh")], 3, 1
    )
    assert await counts(world) == before
    async with world.db.reads() as session:
        rows = (await session.execute(
            select(Participant.name, Participant.phone, Participant.email, Participant.profile,
                   Participant.purged_at).order_by(Participant.id))).all()
        left = (await session.scalars(select(EvidenceItem.criterion))).all()
    names = [row[0] for row in rows]
    assert PEOPLE["an"].name not in names and PEOPLE["chi"].name not in names
    assert PEOPLE["binh"].name in names and PEOPLE["dung"].name in names
    purged = [row for row in rows if row[4] is not None]
    assert [(r[1], r[2], r[3]) for r in purged] == [
        (None, None, {"don_vi": "tan-quy"}), (None, None, {"don_vi": "tan-quy"})
    ]
    assert sorted(left) == ["anh_DUNG", "anh_SHARED"]
    assert not world.files.exists(world.shas["AN"]) and world.files.exists(world.shas["SHARED"])


async def test_purge_refuses_before_the_retention_period_ends(world: World) -> None:
    before = table_dump(world.records_path), file_hashes(world.settings.data_dir)
    # The last wave ended on 15/10/2023; 180 days later is 13/04/2024 (Vietnam time).
    with pytest.raises(PurgeRefused, match="được xóa từ 00:00 13/04/2024"):
        await _purge(world, now=datetime(2024, 4, 12, 16, 59, tzinfo=UTC))  # 23:59 in Vietnam
    with pytest.raises(PurgeRefused, match="chưa đặt retention_days"):
        await _purge(world, campaign="khong_han")
    with pytest.raises(PurgeRefused, match="không có chiến dịch 'khong_co'"):
        await _purge(world, campaign="khong_co")
    with pytest.raises(PurgeRefused, match="chưa hết thời hạn"):
        await _purge(world, campaign="cds_moi")
    # A dry run tells without touching anything.
    plan = await _purge(world, dry_run=True)
    assert (plan.evidence_items, len(plan.erased), plan.files_deleted) == (5, 2, 3)
    assert (table_dump(world.records_path), file_hashes(world.settings.data_dir)) == before
    # The first moment of 13/04/2024 in Vietnam is allowed; --force allows any time.
    plan = await _purge(world, now=datetime(2024, 4, 12, 17, 0, tzinfo=UTC), dry_run=True)
    assert plan.evidence_items == 5
    forced = await _purge(world, campaign="cds_moi", force=True, now=datetime(2026, 3, 2,
                                                                                tzinfo=UTC))
    assert forced.forced and forced.evidence_items == 2
    assert not world.files.exists(world.shas["DUNG"])
    assert world.files.exists(world.shas["SHARED"])  # an's cds_2023 evidence still uses it


async def test_a_data_deletion_request_follows_the_same_rules(world: World) -> None:
    before = await counts(world, "cds_moi")
    await apply(world.db.sessions, world.keys["binh"], "binh-delete", [DataDeletionRequested()],
                datetime(2026, 3, 5, tzinfo=UTC), files=world.files)
    async with world.db.reads() as session:
        binh = await session.get(Participant, await _pid(world, "binh"))
        assert binh is not None and binh.deleted_at is not None
        assert binh.profile == {"don_vi": "phu-tho-hoa"}  # the unit stays, as in a purge
        kept = await session.scalar(
            select(func.count()).select_from(Submission).where(
                Submission.participant_id == binh.id))
        audit = (await session.scalars(select(AuditEntry.action).where(
            AuditEntry.participant_id == binh.id))).all()
    assert kept == 2  # both submissions stay, as anonymous counts
    assert "personal_data_deleted" in audit
    assert not world.files.exists(world.shas["BINH"])
    assert world.files.exists(world.shas["SHARED"])  # an's evidence uses the same bytes
    assert await load_profile(world.db.reads, world.keys["binh"]) == {}
    assert sqlite_checkpoint(world.records_path)
    for text in personal("binh"):
        assert not scan(world.records_path, text), text
    # Reports count by unit of people who did not ask to be forgotten (bots/reports).
    after = await counts(world, "cds_moi")
    assert [r for r in after if r[1] != "phu-tho-hoa" and r[1] != "tan-phu"] == [
        r for r in before if r[1] != "phu-tho-hoa" and r[1] != "tan-phu"
    ]


async def test_xoa_du_lieu_cua_toi_in_the_chat(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Path
) -> None:
    """The whole path: registration in the browser chat, then the command and its
    confirmation; the unit stays, the rest is gone from the database's bytes."""
    from bots.settings import from_env

    settings = from_env({"LOA_CONFIG": str(FLOWS), "LOA_DATA_DIR": str(tmp_path / "var")})
    runtime = Runtime(settings, sweep_every=0)
    runtime.ops.checkpoint_every = 0.2  # the server's periodic checkpoint, sped up
    client = await aiohttp_client(build_app(runtime))
    from .conftest import add_organisations

    assert runtime._db is not None
    await add_organisations(runtime._db, runtime.flows, datetime.now(UTC))  # type: ignore[arg-type]
    chat = Browser(client)
    assert "Bạn muốn làm gì" in await chat.say("menu")
    assert "đồng ý" in (await chat.say("Đăng ký")).lower()
    assert "Họ và tên" in await chat.say("có")
    assert "Đơn vị" in await chat.say("Võ Thị Xóa Dữ Liệu")
    assert "Email" in await chat.say("Đoàn phường Tân Quý")
    assert "điện thoại" in (await chat.say("xoa.du.lieu.ops@example.com")).lower()
    assert "đăng ký xong" in await chat.say("0987 654 321")
    records = settings.data_dir / "loa.sqlite3"
    assert sqlite_checkpoint(records) and scan(records, "xoa.du.lieu.ops@example.com")

    confirm = await chat.say("xóa dữ liệu của tôi")
    assert "xóa" in confirm.lower()
    assert "đã ghi nhận yêu cầu xóa" in await chat.say("Xóa dữ liệu")
    async with runtime._db.reads() as session:
        person = await session.scalar(select(Participant))
    assert person is not None and person.profile == {"don_vi": "tan-quy"}
    assert person.deleted_at is not None
    gone = ("Võ Thị Xóa Dữ Liệu", "xoa.du.lieu.ops@example.com", "+84987654321")
    deadline = asyncio.get_running_loop().time() + 10
    while any(scan(records, text) for text in gone):  # until the server's checkpoint ran
        assert asyncio.get_running_loop().time() < deadline, [t for t in gone if scan(records, t)]
        await asyncio.sleep(0.1)


def test_loa_purge_on_the_command_line(world: World) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(world.settings.data_dir), LOA_CONFIG=str(FLOWS))

    def loa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bots.cli", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    dry = loa("purge", "--campaign", "cds_2023", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Chạy thử (chưa xóa gì)" in dry.stdout and "xóa thông tin cá nhân: 2" in dry.stdout
    assert world.files.exists(world.shas["AN"])
    early = loa("purge", "--campaign", "cds_moi")
    assert early.returncode == 1 and "chưa hết thời hạn lưu trữ" in early.stderr
    done = loa("purge", "--campaign", "cds_2023")
    assert done.returncode == 0, done.stderr
    assert "Đã xóa" in done.stdout and "tệp xóa: 3" in done.stdout
    assert not world.files.exists(world.shas["AN"])


async def _pid(world: World, person: str) -> int:
    from bots.records.models import ChannelIdentity

    async with world.db.reads() as session:
        pid = await session.scalar(
            select(ChannelIdentity.participant_id).where(
                ChannelIdentity.user_id == world.keys[person].user_id
            )
        )
    assert pid is not None
    return pid


async def test_reported_entries_keep_only_the_citizen_id_hash(world: World) -> None:
    """A cadre's reports of citizens they guided (`action: report`): after the purge the
    citizen's name is gone, the keyed hash the counting rules match on stays."""
    from bots.records.models import ReportedEntry

    digest = "ab" * 32
    async with world.db.sessions() as session, session.begin():
        for campaign, citizen in (("cds_2023", "Đinh Văn Người Dân"),
                                  ("cds_moi", "Hồ Thị Còn Hạn")):
            session.add(ReportedEntry(
                participant_id=await _pid(world, "an"), district="tan-phu", kind="huong_dan",
                flow="bao_cao", campaign=campaign, wave="Đợt 1", ref="can-bo-an",
                subject_hash=digest,
                fields={"ho_ten_dan": citizen, "cccd": f"hmac-sha256:{digest}"},
                created_at=datetime(2023, 9, 1, tzinfo=UTC),
            ))
    plan = await _purge(world)
    assert plan.entries == 1
    async with world.db.reads() as session:
        rows = dict((await session.execute(
            select(ReportedEntry.campaign, ReportedEntry.fields))).all())
        hashes = (await session.scalars(select(ReportedEntry.subject_hash))).all()
    assert rows["cds_2023"] == {"cccd": f"hmac-sha256:{digest}"}
    assert rows["cds_moi"]["ho_ten_dan"] == "Hồ Thị Còn Hạn"  # another campaign: untouched
    assert hashes == [digest, digest]
    assert not scan(world.records_path, "Đinh Văn Người Dân")
    assert scan(world.records_path, "Hồ Thị Còn Hạn")
