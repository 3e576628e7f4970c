"""Record events written once, read back, kept across restarts, deleted on request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from bots.records import Records
from bots.records.db import Database, open_database
from bots.records.files import FileStore
from bots.records.models import (
    AuditEntry,
    Base,
    ChannelIdentity,
    EvidenceItem,
    EvidenceKind,
    EvidenceStatus,
    NotificationKind,
    OrganiserNotification,
    Participant,
    ProcessedInbound,
    ReferralCredit,
    Submission,
    SubmissionStatus,
    Tag,
)
from flows.events import (
    ConsentRecorded,
    DataDeletionRequested,
    EvidenceSaved,
    FieldSaved,
    FlowFinished,
    HandoverRequested,
    OrganisersNotified,
    RecordEvent,
    ReferralRecorded,
    SubmissionSubmitted,
    Tagged,
)
from flows.vocab import Attachment, Channel, ConversationKey

AN = ConversationKey("tan-phu", Channel.MESSENGER, "24017391")
BINH = ConversationKey("tan-phu", Channel.TELEGRAM, "700000002")
T0 = datetime(2023, 8, 7, 9, 30, tzinfo=UTC)
CONSENT = "Ban Tổ chức cần lưu họ tên, đơn vị, email và số điện thoại của bạn. Bạn đồng ý chứ?"


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return FileStore.for_data_dir(tmp_path / "data")


@pytest.fixture
def records(db: Database, files: FileStore) -> Records:
    return Records(db.sessions, files, reads=db.reads)


async def _count(db: Database, model: type[Base], **where: Any) -> int:
    async with db.reads() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await session.scalar(query) or 0)


def _screenshot(files: FileStore, content: bytes) -> Attachment:
    sha = files.put(content)
    return Attachment(
        mime="image/jpeg", url="https://cdn.example/x.jpg", unique_id=f"u-{sha[:8]}",
        size=len(content), sha256=sha,
    )  # fmt: skip


def _registration() -> list[RecordEvent]:
    return [
        ConsentRecorded(given=True, text=CONSENT),
        FieldSaved("ho_ten", "Nguyễn Văn An"),
        FieldSaved("don_vi", "Đoàn phường Hòa Thạnh"),
        FieldSaved("email", "an.nguyen@gmail.com"),
        FieldSaved("so_dien_thoai", "+84912345678"),
    ]


async def test_every_event_type_is_written(
    db: Database, records: Records, files: FileStore
) -> None:
    vneid = _screenshot(files, b"vneid screenshot bytes")
    await records.apply(AN, "mid.1", [ReferralRecorded("cb_nguyen_lan", "dang_ky")], T0)
    await records.apply(AN, "mid.2", _registration(), T0 + timedelta(minutes=1))
    await records.apply(
        AN,
        "mid.3",
        [
            EvidenceSaved("cong_dan_so", "vneid", attachment=vneid),
            EvidenceSaved("cong_dan_so", "dich_vu_cong", text="Đăng ký tạm trú, lĩnh vực cư trú"),
            Tagged("cong_dan_so"),
            OrganisersNotified("Có minh chứng mới của Nguyễn Văn An"),
        ],
        T0 + timedelta(minutes=2),
    )
    await records.apply(
        AN,
        "mid.4",
        [
            SubmissionSubmitted("cong_dan_so", "Đợt 1"),
            FlowFinished("cong_dan_so"),
            HandoverRequested("Bạn ấy hỏi về lỗi kích hoạt VNeID"),
        ],
        T0 + timedelta(minutes=3),
    )

    assert await records.load_profile(AN) == {
        "ho_ten": "Nguyễn Văn An",
        "don_vi": "Đoàn phường Hòa Thạnh",
        "email": "an.nguyen@gmail.com",
        "so_dien_thoai": "+84912345678",
    }
    async with db.reads() as session:
        identity = await session.scalar(select(ChannelIdentity))
        assert identity is not None
        assert (identity.district, identity.channel, identity.user_id) == (
            "tan-phu",
            Channel.MESSENGER,
            "24017391",
        )
        assert identity.referral_code == "cb_nguyen_lan" and identity.paused is True
        person = await session.get(Participant, identity.participant_id)
        assert person is not None
        assert (person.name, person.email, person.phone) == (
            "Nguyễn Văn An",
            "an.nguyen@gmail.com",
            "+84912345678",
        )
        assert person.consent_given_at == T0 + timedelta(minutes=1)
        assert person.consent_text == CONSENT
        submission = await session.scalar(select(Submission))
        assert submission is not None
        assert (submission.campaign, submission.wave, submission.status) == (
            "cong_dan_so",
            "Đợt 1",
            SubmissionStatus.SUBMITTED,
        )
        assert submission.submitted_at == T0 + timedelta(minutes=3)
        items = (await session.scalars(select(EvidenceItem).order_by(EvidenceItem.id))).all()
        assert [(i.criterion, i.kind, i.status) for i in items] == [
            ("vneid", EvidenceKind.IMAGE, EvidenceStatus.PENDING),
            ("dich_vu_cong", EvidenceKind.TEXT, EvidenceStatus.PENDING),
        ]
        assert items[0].sha256 == vneid.sha256 and vneid.sha256 is not None
        assert files.root / (items[0].file_path or "") == files.path(vneid.sha256)
        assert (items[0].mime, items[0].size) == ("image/jpeg", len(b"vneid screenshot bytes"))
        assert items[0].platform_unique_id == vneid.unique_id
        assert items[1].text == "Đăng ký tạm trú, lĩnh vực cư trú" and items[1].sha256 is None
        credit = await session.scalar(select(ReferralCredit))
        assert credit is not None and (credit.code, credit.flow) == ("cb_nguyen_lan", "dang_ky")
        assert (await session.scalars(select(Tag.tag))).all() == ["cong_dan_so"]
        notes = (
            await session.scalars(select(OrganiserNotification).order_by(OrganiserNotification.id))
        ).all()
        assert [(n.kind, n.district) for n in notes] == [
            (NotificationKind.NOTIFY, "tan-phu"),
            (NotificationKind.HANDOVER, "tan-phu"),
        ]
        actions = (await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id))).all()
        assert actions == [
            "consent_given",
            "submission_submitted",
            "flow_finished",
            "handover_requested",
        ]
    assert await _count(db, ProcessedInbound) == 4

    await records.apply(AN, "mid.5", [DataDeletionRequested()], T0 + timedelta(days=1))
    assert await records.load_profile(AN) == {}
    assert await _count(db, EvidenceItem) == 0
    assert not files.exists(vneid.sha256)


async def test_a_replayed_inbound_writes_nothing_twice(db: Database, records: Records) -> None:
    events: list[RecordEvent] = [
        *_registration(),
        EvidenceSaved("cong_dan_so", "dich_vu_cong", text="Khai sinh trực tuyến"),
        ReferralRecorded("cb_lan", "dang_ky"),
        Tagged("vneid"),
        OrganisersNotified("mới"),
        SubmissionSubmitted("cong_dan_so", None),
    ]
    await records.apply(AN, "mid.1", events, T0)
    tables: list[type[Base]] = [
        Participant, ChannelIdentity, Submission, EvidenceItem, ReferralCredit, Tag,
        OrganiserNotification, AuditEntry, ProcessedInbound,
    ]  # fmt: skip
    before = [await _count(db, table) for table in tables]
    # Replayed one after the other, and by two writers at the same moment.
    await records.apply(AN, "mid.1", events, T0 + timedelta(seconds=5))
    await asyncio.gather(*(records.apply(AN, "mid.1", events, T0) for _ in range(3)))
    assert [await _count(db, table) for table in tables] == before
    assert before[:3] == [1, 1, 1]
    # The same message id in another conversation is another message.
    await records.apply(BINH, "mid.1", [Tagged("vneid")], T0)
    assert await _count(db, Tag) == 2


async def test_evidence_replaces_per_criterion_and_a_new_draft_follows_a_submission(
    db: Database, records: Records
) -> None:
    await records.apply(AN, "1", [EvidenceSaved("cds", "dvc", text="lần đầu")], T0)
    await records.apply(AN, "2", [EvidenceSaved("cds", "dvc", text="sửa lại")], T0)
    await records.apply(AN, "3", [SubmissionSubmitted("cds", "Đợt 2")], T0)
    await records.apply(AN, "4", [EvidenceSaved("cds", "dvc", text="đợt sau")], T0)
    async with db.reads() as session:
        rows = (
            await session.execute(
                select(Submission.id, Submission.status, EvidenceItem.text, EvidenceItem.status)
                .join(EvidenceItem, EvidenceItem.submission_id == Submission.id)
                .order_by(EvidenceItem.id)
            )
        ).all()
    first, _, _ = (row[0] for row in rows)
    assert [tuple(row[1:]) for row in rows] == [
        (SubmissionStatus.SUBMITTED, "lần đầu", EvidenceStatus.REPLACED),
        (SubmissionStatus.SUBMITTED, "sửa lại", EvidenceStatus.PENDING),
        (SubmissionStatus.DRAFT, "đợt sau", EvidenceStatus.PENDING),
    ]
    assert rows[2][0] != first


async def test_touch_identity_keeps_the_latest_inbound_and_the_first_ref(
    db: Database, records: Records
) -> None:
    await records.touch_identity(AN, T0, ref="huyhieuso")
    await records.touch_identity(AN, T0 + timedelta(hours=2), ref="other")
    await records.touch_identity(AN, T0 + timedelta(hours=1))  # late, out of order
    async with db.reads() as session:
        identity = await session.scalar(select(ChannelIdentity))
    assert identity is not None
    assert identity.last_inbound_at == T0 + timedelta(hours=2)
    assert identity.entry_ref == "huyhieuso"
    assert await _count(db, Participant) == 1
    assert await records.load_profile(AN) == {}  # known, nothing saved yet
    assert await records.load_profile(BINH) == {}  # never seen


async def test_data_survives_a_restart(database_url: str, files: FileStore) -> None:
    first = await open_database(database_url)
    await Records(first.sessions, files).apply(AN, "m1", _registration(), T0)
    await first.close()
    second = await open_database(database_url)
    try:
        records = Records(second.sessions, files, reads=second.reads)
        assert (await records.load_profile(AN))["ho_ten"] == "Nguyễn Văn An"
        await records.apply(AN, "m1", [FieldSaved("ho_ten", "replayed")], T0)
        assert (await records.load_profile(AN))["ho_ten"] == "Nguyễn Văn An"
    finally:
        await second.close()


async def test_deleting_personal_data_keeps_anonymous_counts(
    db: Database, records: Records, files: FileStore
) -> None:
    own = _screenshot(files, b"An's own VNeID screen")
    shared = _screenshot(files, b"the sample image everyone forwards")
    await records.apply(AN, "1", _registration(), T0)
    await records.apply(
        AN,
        "2",
        [
            EvidenceSaved("cds", "vneid", attachment=own),
            EvidenceSaved("cds", "tnvn", attachment=shared),
            ReferralRecorded("cb_lan", "dang_ky"),
            Tagged("cds"),
            OrganisersNotified("Nguyễn Văn An, 0912345678, đã gửi minh chứng"),
            SubmissionSubmitted("cds", "Đợt 1"),
        ],
        T0,
    )
    await records.apply(BINH, "1", [EvidenceSaved("cds", "tnvn", attachment=shared)], T0)

    later = T0 + timedelta(days=3)
    await records.delete_personal_data(AN, later)

    assert await records.load_profile(AN) == {}
    async with db.reads() as session:
        an = await session.scalar(
            select(Participant).join(ChannelIdentity).where(ChannelIdentity.user_id == AN.user_id)
        )
        assert an is not None
        assert (an.name, an.phone, an.email, an.consent_given_at, an.consent_text) == (None,) * 5
        assert an.deleted_at == later
        notes = (await session.scalars(select(OrganiserNotification.text))).all()
        assert all("0912345678" not in note for note in notes)
    assert own.sha256 is not None and shared.sha256 is not None
    assert not files.exists(own.sha256)
    assert files.exists(shared.sha256)  # Bình's evidence still uses it
    assert await _count(db, EvidenceItem) == 1
    assert await _count(db, Submission, status=SubmissionStatus.SUBMITTED) == 1
    assert await _count(db, ReferralCredit, code="cb_lan") == 1
    assert await _count(db, Tag) == 1
    assert await _count(db, AuditEntry, action="personal_data_deleted") == 1


async def test_naive_datetimes_are_refused(records: Records) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        await records.touch_identity(AN, datetime(2023, 8, 7, 9, 30))


async def test_two_writers_on_one_sqlite_file_both_succeed(tmp_path: Path) -> None:
    """Two engines (as two processes would have) writing at once: BEGIN IMMEDIATE and the busy
    timeout make them take turns instead of failing with "database is locked"."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'loa.sqlite3'}"
    dbs = [await open_database(url), await open_database(url)]
    try:
        writers = [Records(db.sessions) for db in dbs]
        keys = [ConversationKey("tan-phu", Channel.ZALO, f"u{n}") for n in range(40)]
        await asyncio.gather(
            *(
                writers[n % 2].apply(key, "m1", [*_registration(), Tagged("x")], T0)
                for n, key in enumerate(keys)
            )
        )
        assert await _count(dbs[0], Participant) == 40
        assert await _count(dbs[1], Tag) == 40
    finally:
        for db in dbs:
            await db.close()


async def test_evidence_keeps_the_decoded_qr_and_perceptual_hash(
    db: Database, records: Records, files: FileStore
) -> None:
    # A bank QR payload identifies a person far better than a perceptual hash: both must reach
    # the evidence row so the review queue can flag duplicates.
    shot = _screenshot(files, b"bank qr screenshot")
    qr = "00020101021238570010A000000727012700069704220113VQRQ0001234560208QRIBFTTA"
    shot = Attachment(
        mime=shot.mime, url=shot.url, unique_id=shot.unique_id, size=shot.size,
        sha256=shot.sha256, qr=qr, phash="c3c3e1e1f0f07878",
    )  # fmt: skip
    await records.apply(AN, "mid.1", _registration(), T0)
    evidence = EvidenceSaved("cong_dan_so", "thanh_toan", attachment=shot)
    await records.apply(AN, "mid.2", [evidence], T0)
    async with db.reads() as session:
        item = await session.scalar(select(EvidenceItem))
        assert item is not None
        assert (item.qr_payload, item.perceptual_hash) == (qr, "c3c3e1e1f0f07878")


async def test_answers_saved_to_the_profile_of_someone_known(
    db: Database, records: Records
) -> None:
    """The commonest turn (only FieldSaved) is one statement on PostgreSQL; on every backend it
    merges the profile, fills the indexed columns, brings back someone whose data was deleted,
    and a replay of the same inbound writes nothing."""
    from sqlalchemy import event as sa_event

    await records.apply(AN, "mid.1", _registration(), T0)  # someone new: the general path
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    async with db.sessions() as session, session.begin():
        participant = await session.scalar(select(Participant))
        assert participant is not None
        participant.deleted_at = T0  # as after "xóa dữ liệu của tôi", before they answer again
    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        later = T0 + timedelta(minutes=3)
        await records.apply(
            AN, "mid.2", [FieldSaved("ho_ten", "Nguyễn Văn Ân"), FieldSaved("lop", "12A1")], later
        )
        if db.engine.dialect.name == "postgresql":
            assert len(statements) == 1, statements
        await records.apply(AN, "mid.2", [FieldSaved("ho_ten", "Người khác")], later)  # replay
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    async with db.reads() as session:
        participant = await session.scalar(select(Participant))
    assert participant is not None
    assert participant.profile["ho_ten"] == "Nguyễn Văn Ân"
    assert participant.profile["lop"] == "12A1"
    assert participant.profile["email"] == "an.nguyen@gmail.com"  # earlier answers kept
    assert participant.name == "Nguyễn Văn Ân" and participant.deleted_at is None
    assert await _count(db, ProcessedInbound) == 2
