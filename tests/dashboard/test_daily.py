"""bots.reports.daily: first submissions and approvals per Vietnamese day with running totals,
in SQL, on SQLite and (when it answers on 127.0.0.1:5432) PostgreSQL — against the same figures
worked out in Python from the seed's own list, and against `queries.progress`."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

from bots.records import Database
from bots.records.models import Submission
from bots.reports import daily, queries
from bots.reports.organisations import sync_organisations
from flows.compiler import CompiledBundle
from tests.reports.conftest import compiled, database_url, db  # noqa: F401 (fixtures)
from tests.reports.seed import P2C_APPROVED, PEOPLE, seed_progress

VN = timedelta(hours=7)


def expected(units: set[str], district: str, wave: str | None) -> list[tuple[date, int, int]]:
    """(day, first submissions, first approvals) of registered people of a subtree, by hand."""
    submitted: Counter[date] = Counter()
    approved: Counter[date] = Counter()
    for name, person_district, unit, submissions in PEOPLE:
        if unit is None:
            continue  # not registered: in no figure
        mine = unit in units or (unit == "Đoàn phường 3" and "p3" in units) or (
            unit == "xyz" and person_district == district and district in units)
        if not mine:
            continue
        sent = [s for s in submissions if s[1] is not None and (wave is None or s[0] == wave)]
        if not sent:
            continue
        submitted[min(s[1] for s in sent).__add__(VN).date()] += 1
        times = [s[3] or (P2C_APPROVED if name == "Cường P2c" else s[1]) for s in sent
                 if s[2].value == "approved"]
        if times:
            approved[(min(times) + VN).date()] += 1
    days = sorted(set(submitted) | set(approved))
    return [(d, submitted[d], approved[d]) for d in days]


async def test_days_and_running_totals(db: Database, compiled: CompiledBundle) -> None:  # noqa: F811
    await sync_organisations(db, compiled)
    await seed_progress(db)
    for org, units, district in (
        ("quan-a", {"quan-a", "p1", "p2", "p3", "t1"}, "quan-a"),
        ("p1", {"p1"}, ""),
        ("tinh", {"tinh", "quan-a", "p1", "p2", "p3", "t1", "quan-b", "b1"}, "quan-a"),
    ):
        for wave in (None, "Đợt 1", "Đợt 2"):
            rows = await daily.daily_progress(db, "thu_thach", org=org, wave=wave)
            want = expected(units, district, wave)
            assert [(r.day, r.submitted, r.approved) for r in rows] == want, (org, wave)
            totals = [(sum(w[1] for w in want[: n + 1]), sum(w[2] for w in want[: n + 1]))
                      for n in range(len(want))]
            assert [(r.submitted_total, r.approved_total) for r in rows] == totals
            head = (await queries.progress(db, "thu_thach", org=org, wave=wave))[0]
            assert head.slug == org
            last = rows[-1] if rows else None
            assert (last.submitted_total if last else 0) == head.submitted
            assert (last.approved_total if last else 0) == head.approved


async def test_a_late_evening_approval_counts_on_the_vietnamese_day(
    db: Database, compiled: CompiledBundle  # noqa: F811
) -> None:
    """23:30 on 9 August in Vietnam is 16:30 UTC: the 9th, not the 10th; 00:30 on the 10th in
    Vietnam is 17:30 UTC on the 9th: the 10th."""
    from datetime import UTC, datetime

    from bots.records.models import Participant, Review, ReviewDecision, SubmissionStatus

    await sync_organisations(db, compiled)
    async with db.sessions() as session, session.begin():
        for n, (sent, ok) in enumerate((
            (datetime(2023, 8, 9, 16, 30, tzinfo=UTC), datetime(2023, 8, 9, 16, 45, tzinfo=UTC)),
            (datetime(2023, 8, 9, 17, 30, tzinfo=UTC), datetime(2023, 8, 9, 17, 40, tzinfo=UTC)),
        )):
            person = Participant(district="quan-a", profile={"don_vi": "p1"}, name=f"P{n}",
                                 created_at=sent, updated_at=sent)
            session.add(person)
            await session.flush()
            sub = Submission(participant_id=person.id, campaign="thu_thach", wave="Đợt 1",
                             status=SubmissionStatus.APPROVED, created_at=sent, updated_at=ok,
                             submitted_at=sent)
            session.add(sub)
            await session.flush()
            session.add(Review(submission_id=sub.id, decision=ReviewDecision.APPROVE,
                               created_at=ok, notify=False))
    rows = await daily.daily_progress(db, "thu_thach", org="p1")
    assert [(r.day, r.submitted, r.approved, r.approved_total) for r in rows] == [
        (date(2023, 8, 9), 1, 1, 1), (date(2023, 8, 10), 1, 1, 2)]
