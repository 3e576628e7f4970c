"""Seeded records whose report figures the tests state by hand (see each test's comments).

Progress (campaign `thu_thach`): participants and submissions written as ORM rows (approval is
the console's job), weekly activity rows. Cadres (campaign `vneid`): everything through the
records writer (`Records.apply`) exactly as the pipeline writes engine events.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from typing import Any

from bots.records import Database, Records
from bots.records.models import (
    Participant,
    ParticipantWeek,
    Review,
    ReviewDecision,
    Submission,
    SubmissionStatus,
)
from flows.events import EntryReported, FieldSaved, RecordEvent, ReferralRecorded, citizen_id_hash
from flows.vocab import Channel, ConversationKey
from tests.reports.conftest import KEY


def at(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2023, month, day, hour, tzinfo=UTC)


REGISTERED = at(8, 1)

# name, district, don_vi, [(wave, submitted_at, status, approved review time | None)]
APPROVED = SubmissionStatus.APPROVED
PEOPLE: list[tuple[str, str, str | None, list[tuple[Any, ...]]]] = [
    ("An A1", "quan-a", "p1", [("Đợt 1", at(8, 8), APPROVED, at(8, 10)),
                               ("Đợt 2", at(9, 16), APPROVED, at(9, 18))]),
    ("Bình A2", "quan-a", "p1", [("Đợt 1", at(8, 8, 10), APPROVED, at(8, 11))]),
    ("Cường A3", "quan-a", "p1", [("Đợt 1", at(8, 9), APPROVED, at(8, 12))]),
    ("Dũng A4", "quan-a", "p1", [("Đợt 1", at(8, 9, 10), APPROVED, at(8, 15, 10))]),
    ("An P2a", "quan-a", "p2", [("Đợt 1", at(8, 10), APPROVED, at(8, 12, 10))]),
    ("Bình P2b", "quan-a", "p2", [("Đợt 1", at(8, 10, 10), APPROVED, at(8, 13))]),
    # approved without a review row: the submission's last change is the approval time
    ("Cường P2c", "quan-a", "p2", [("Đợt 1", at(8, 11), APPROVED, None)]),
    ("An C1", "quan-a", "p3", [("Đợt 1", at(8, 18), APPROVED, at(8, 20))]),
    ("Bình C2", "quan-a", "p3", [("Đợt 1", at(8, 18, 10), SubmissionStatus.SUBMITTED, None)]),
    ("Cường C3", "quan-a", "p3", [("Đợt 1", at(8, 18, 11), SubmissionStatus.REJECTED, None)]),
    ("Dũng C4", "quan-a", "p3", [("Đợt 1", None, SubmissionStatus.DRAFT, None)]),
    # the unit written by its name, as older or imported data may have it
    ("Em C5", "quan-a", "Đoàn phường 3", []),
    ("An T1", "quan-a", "t1", [("Đợt 1", at(8, 19), APPROVED, at(8, 20, 10))]),
    ("Bình T2", "quan-a", "t1", [("Đợt 2", at(9, 16), APPROVED, at(9, 20))]),
    # a unit nobody has: filed under the district the person chats with
    ("An D1", "quan-a", "xyz", [("Đợt 1", at(8, 14), APPROVED, at(8, 16))]),
    ("An B1", "quan-b", "b1", [("Đợt 1", at(8, 24), APPROVED, at(8, 25))]),
    ("Bình B2", "quan-b", "b1", [("Đợt 1", at(8, 24, 10), APPROVED, at(8, 26))]),
    ("Cường B3", "quan-b", "b1", [("Đợt 1", at(8, 24, 11), APPROVED, at(8, 27))]),
    # never registered (no unit): not in any figure but weekly activity
    ("", "quan-a", None, []),
]
P2C_APPROVED = at(8, 14)
T2_REGISTERED = at(9, 16)
# participant name → [(week_start, messages)]
WEEKS = {
    "An A1": [(date(2023, 8, 7), 2), (date(2023, 8, 14), 3)],
    "Bình A2": [(date(2023, 8, 14), 1)],
    "An P2a": [(date(2023, 8, 14), 2)],
    "An D1": [(date(2023, 8, 14), 1)],
    "": [(date(2023, 8, 14), 4)],
    "An B1": [(date(2023, 8, 21), 1)],
}


async def seed_progress(db: Database) -> dict[str, int]:
    """The progress data set; returns participant ids by name."""
    ids: dict[str, int] = {}
    async with db.sessions() as session, session.begin():
        for name, district, unit, submissions in PEOPLE:
            created = T2_REGISTERED if name == "Bình T2" else REGISTERED
            profile = {"ho_ten": name, "don_vi": unit} if unit else {}
            person = Participant(
                district=district, profile=profile, name=name or None,
                created_at=created, updated_at=created,
            )
            session.add(person)
            await session.flush()
            ids[name] = person.id
            for wave, submitted, status, approved in submissions:
                changed = approved or submitted or created
                if name == "Cường P2c":
                    changed = P2C_APPROVED
                sub = Submission(
                    participant_id=person.id, campaign="thu_thach", wave=wave, status=status,
                    created_at=created, updated_at=changed, submitted_at=submitted,
                )
                session.add(sub)
                await session.flush()
                if approved is not None:
                    session.add(Review(submission_id=sub.id, decision=ReviewDecision.APPROVE,
                                       created_at=approved, notify=False))
            for week, messages in WEEKS.get(name, []):
                stamp = datetime(week.year, week.month, week.day, 3, tzinfo=UTC)
                session.add(ParticipantWeek(participant_id=person.id, week_start=week,
                                            messages=messages, first_at=stamp, last_at=stamp))
        # Other campaigns never count; nor do deleted people.
        session.add(Submission(participant_id=ids["An A1"], campaign="khac", wave=None,
                               status=APPROVED, created_at=REGISTERED, updated_at=at(8, 9),
                               submitted_at=at(8, 8)))
        session.add(Participant(district="quan-a", profile={}, created_at=REGISTERED,
                                updated_at=REGISTERED, deleted_at=at(8, 20)))
    return ids


# -- cadres ---------------------------------------------------------------------------------------

_inbound = itertools.count(1)


def citizen(cccd: str | None, *, category: str = "Người dân", level: str = "Mức 2",
            portal: str = "có", activated: str = "2023-04-25", name: str = "Người dân",
            hashed: bool = False) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The fields of one reported citizen (and which are protected)."""
    fields: list[tuple[str, str]] = [("ten_cong_dan", name)]
    protected: tuple[str, ...] = ()
    if cccd is not None:
        fields.append(("cccd_cong_dan", citizen_id_hash(KEY, cccd) if hashed else cccd))
        protected = ("cccd_cong_dan",)
    fields += [("sdt_cong_dan", "+84912000111"), ("doi_tuong", category), ("muc_vneid", level),
               ("tai_khoan_dvc", portal), ("ngay_kich_hoat", activated)]
    return tuple(fields), protected


async def _say(records: Records, user: str, events: list[RecordEvent], when: datetime) -> None:
    key = ConversationKey("sc", Channel.WEBCHAT, user)
    await records.apply(key, f"in-{next(_inbound)}", events, when)


async def _cadre(records: Records, user: str, name: str, unit: str, kind: str,
                 code: str) -> None:
    await _say(records, user, [
        FieldSaved("ho_ten", name), FieldSaved("don_vi", unit),
        FieldSaved("loai_can_bo", kind), FieldSaved("ma_gioi_thieu", code),
    ], at(4, 22))


async def _report(records: Records, user: str, when: datetime, kind: str = "cong_dan",
                  flow: str = "bao_cao_can_bo", ref: str | None = None,
                  **facts: Any) -> None:
    cccd = facts.pop("cccd")
    fields, protected = citizen(cccd, **facts)
    await _say(records, user, [EntryReported(kind, flow, fields, protected, "vneid", "Đợt 1",
                                             ref)], when)


CADRE = "Cán bộ, công chức"
MEMBER = "Đoàn viên"


async def seed_cadres(db: Database) -> None:
    """K1 (x1, code CB01): 50 valid citizens, X (also K2's), an excluded category, an early
    activation, one account only, one citizen reported twice (latest valid), one without an ID
    number. K2 (x1): 19 valid + X. K3 (x2, member, code dv03): 9 valid, and S1 self-declared
    by K3's link after Đợt 1. Self-declared: S2 by cb99's link (no cadre has it), S3 by both
    cb01's and cb99's links, S4 whose credit is for another flow. K4 (x2): nothing."""
    records = Records(db.sessions, citizen_key=KEY)
    await _cadre(records, "k1", "Lò Văn Một", "x1", CADRE, "CB01")
    await _cadre(records, "k2", "Quàng Thị Hai", "x1", CADRE, "chưa")
    await _cadre(records, "k3", "Cà Văn Ba", "x2", MEMBER, "dv03")
    await _cadre(records, "k4", "Lường Văn Bốn", "x2", CADRE, "chưa")
    day = at(5, 2)
    for n in range(50):
        await _report(records, "k1", day, cccd=f"0792300000{n:02d}")
    await _report(records, "k1", day, cccd="079299999999")  # X
    await _report(records, "k1", day, cccd="079211111111", category=MEMBER)
    await _report(records, "k1", day, cccd="079222222222", activated="2023-04-20")
    await _report(records, "k1", day, cccd="079233333333", portal="không")
    await _report(records, "k1", at(5, 2, 8), cccd="079244444444", level="Chưa kích hoạt")
    await _report(records, "k1", at(5, 3), cccd="0792 4444 4444")  # the same, now valid
    await _report(records, "k1", day, cccd=None)
    for n in range(19):
        await _report(records, "k2", day, cccd=f"0792400000{n:02d}")
    # X again, as the engine sends it when it holds the key: already hashed
    await _report(records, "k2", day, cccd="0792 9999 9999", hashed=True)
    for n in range(9):
        await _report(records, "k3", at(5, 5), cccd=f"0792500000{n:02d}")
    for user, codes, cccd, when, flow in (
        ("s1", ["DV03"], "079260000001", at(5, 20), "tu_khai_vneid"),
        ("s2", ["cb99"], "079260000002", at(5, 6), "tu_khai_vneid"),
        ("s3", ["cb01", "cb99"], "079260000003", at(5, 7), "tu_khai_vneid"),
        ("s4", ["cb01"], "079260000004", at(5, 8), "huong_dan_vneid"),
    ):
        await _say(records, user, [ReferralRecorded(code, flow) for code in codes], when)
        await _report(records, user, when, kind="tu_khai", flow="tu_khai_vneid",
                      ref=codes[-1], cccd=cccd, name=f"Tự khai {user}")
