"""Progress figures on the seeded data set (tests/reports/seed.py), against numbers worked out
by hand, on SQLite and PostgreSQL.

The approvals of campaign `thu_thach`, in time order (UTC):
  1 A1 08-10 09h (p1)   2 A2 08-11 (p1)   3 A3 08-12 09h (p1)   4 P2a 08-12 10h (p2)
  5 P2b 08-13 (p2)      6 P2c 08-14 (p2, no review row)        7 A4 08-15 10h (p1)
  8 D1 08-16 (quan-a)   9 C1 08-20 09h (p3)  10 T1 08-20 10h (t1)  11 B1 08-25 (b1)
 12 B2 08-26 (b1)      13 B3 08-27 (b1)     14 T2 09-20 (t1, Đợt 2)
A1's second approval (Đợt 2, 09-18) and its other campaign never count twice.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from bots.records import Database
from bots.reports.organisations import sync_organisations
from bots.reports.queries import (
    STATUS_APPROVED,
    STATUS_NONE,
    STATUS_PENDING,
    STATUS_REJECTED,
    ProgressRow,
    end_of_day,
    name_list,
    progress,
    weekly_active,
)
from flows.compiler import CompiledBundle
from tests.reports.seed import at, seed_progress

AS_OF = datetime(2023, 8, 16, 5, tzinfo=UTC)  # the week of Monday 14/8


async def _rows(db: Database, **kwargs: object) -> dict[str, ProgressRow]:
    rows = await progress(db, "thu_thach", as_of=AS_OF, **kwargs)  # type: ignore[arg-type]
    return {r.slug: r for r in rows}


async def _seeded(db: Database, compiled: CompiledBundle) -> None:
    await sync_organisations(db, compiled)
    await seed_progress(db)


def counts(row: ProgressRow) -> tuple[int, int, int]:
    return row.registered, row.submitted, row.approved


async def test_units_and_roll_up_over_the_tree(db: Database, compiled: CompiledBundle) -> None:
    await _seeded(db, compiled)
    rows = await _rows(db)
    assert list(rows) == ["tinh", "quan-a", "p1", "p2", "p3", "t1", "quan-b", "b1", "sc", "x1",
                          "x2"]
    # registered (profile names a unit), submitted, approved — distinct people
    assert counts(rows["p1"]) == (4, 4, 4)
    assert counts(rows["p2"]) == (3, 3, 3)
    assert counts(rows["p3"]) == (5, 3, 1)  # C5 by unit name; C4 only a draft
    assert counts(rows["t1"]) == (2, 2, 2)
    assert counts(rows["quan-a"]) == (15, 13, 11)  # + D1, whose unit is unknown
    assert counts(rows["b1"]) == (3, 3, 3)
    assert counts(rows["quan-b"]) == (3, 3, 3)
    assert counts(rows["tinh"]) == (18, 16, 14)
    assert counts(rows["sc"]) == (0, 0, 0)
    # members and quotas: declared, percent of members (half up), or summed
    assert (rows["p1"].members, rows["p1"].quota, rows["p1"].quota_label) == (4, 2, "50%")
    assert (rows["p2"].members, rows["p2"].quota) == (3, 2)  # 1.5 → 2
    assert (rows["p3"].members, rows["p3"].quota) == (5, 2)
    assert (rows["quan-a"].members, rows["quan-a"].quota, rows["quan-a"].quota_label) == (
        14, 8, None)
    assert (rows["quan-b"].members, rows["quan-b"].quota) == (10, 3)  # its own, not b1's 6
    assert (rows["b1"].quota, rows["b1"].quota_label) == (3, "3")
    assert (rows["tinh"].members, rows["tinh"].quota) == (24, 11)
    assert (rows["sc"].members, rows["sc"].quota) == (None, None)
    # percentages
    assert rows["p3"].approved_of_members == 1 / 5
    assert rows["p3"].approved_of_quota == 1 / 2
    assert rows["p3"].submitted_of_members == 3 / 5
    assert rows["quan-a"].approved_of_quota == 11 / 8
    assert rows["sc"].approved_of_members is None


async def test_the_day_each_unit_reached_100_percent_and_its_rank_in_the_area(
    db: Database, compiled: CompiledBundle
) -> None:
    await _seeded(db, compiled)
    rows = await _rows(db)
    p1, p2, p3, t1, b1 = (rows[s] for s in ("p1", "p2", "p3", "t1", "b1"))
    # by approvals: p2's third (08-14) came before p1's fourth (08-15)
    assert p2.reached_members_at == at(8, 14)  # P2c: no review, its last change
    assert p1.reached_members_at == at(8, 15, 10)
    assert p3.reached_members_at is None
    assert t1.reached_members_at == at(9, 20)
    assert (p2.rank_in_area, p1.rank_in_area, p3.rank_in_area) == (1, 2, 3)
    assert t1.rank_in_area == 1  # alone in Khối trường học
    assert b1.rank_in_area == 1  # ranked among quan-b's units only
    assert rows["quan-a"].rank_in_area is None  # no area
    # by submissions the order is the other way round: p1's fourth 08-09, p2's third 08-11
    assert p1.reached_members_submitted_at == at(8, 9, 10)
    assert p2.reached_members_submitted_at == at(8, 11)
    assert (p1.rank_in_area_submitted, p2.rank_in_area_submitted) == (1, 2)
    # quotas: p1's 2nd approval, p2's 2nd, quan-a's 8th (D1), tinh's 11th (B1), b1's 3rd
    assert p1.reached_quota_at == at(8, 11)
    assert p2.reached_quota_at == at(8, 13)
    assert p3.reached_quota_at is None
    assert rows["quan-a"].reached_quota_at == at(8, 16)
    assert rows["quan-a"].reached_members_at is None  # 11 of 14
    assert rows["tinh"].reached_quota_at == at(8, 25)
    assert b1.reached_quota_at == at(8, 27)
    assert rows["quan-b"].reached_quota_at == at(8, 27)


async def test_a_wave_counts_its_own_submissions(db: Database, compiled: CompiledBundle) -> None:
    await _seeded(db, compiled)
    first = await _rows(db, wave="Đợt 1")
    assert counts(first["p1"]) == (4, 4, 4)
    assert counts(first["t1"]) == (2, 1, 1)  # T2 submitted in Đợt 2
    assert first["t1"].reached_members_at is None
    assert counts(first["quan-a"]) == (15, 12, 10)
    assert counts(first["tinh"]) == (18, 15, 13)
    second = await _rows(db, wave="Đợt 2")
    assert counts(second["p1"]) == (4, 1, 1)  # A1 again
    assert second["p1"].reached_quota_at is None
    assert counts(second["t1"]) == (2, 1, 1)
    assert counts(second["quan-a"]) == (15, 2, 2)
    assert counts(second["p3"]) == (5, 0, 0)


async def test_as_of_a_deadline(db: Database, compiled: CompiledBundle) -> None:
    await _seeded(db, compiled)
    # by the end of 14/8 (Vietnam time): A1–A3 and all of p2 approved; D1 submitted
    rows = await _rows(db, until=end_of_day(date(2023, 8, 14)))
    assert counts(rows["p1"]) == (4, 4, 3)
    assert counts(rows["p2"]) == (3, 3, 3)
    assert (rows["p2"].rank_in_area, rows["p1"].rank_in_area) == (1, 2)
    assert rows["p1"].reached_members_at is None
    assert counts(rows["quan-a"]) == (14, 8, 6)  # T2 registered on 16/9
    assert counts(rows["t1"]) == (1, 0, 0)


async def test_an_organisation_sees_only_its_subtree(
    db: Database, compiled: CompiledBundle
) -> None:
    await _seeded(db, compiled)
    rows = await _rows(db, org="quan-b")
    assert list(rows) == ["quan-b", "b1"]
    assert counts(rows["quan-b"]) == (3, 3, 3)
    assert list(await _rows(db, org="p3")) == ["p3"]


async def test_weekly_active_participants(db: Database, compiled: CompiledBundle) -> None:
    await _seeded(db, compiled)
    rows = await _rows(db)
    # registered people who wrote in the week of 14/8: A1, A2 (p1), P2a (p2), D1 (quan-a)
    assert (rows["p1"].active_week, rows["p2"].active_week, rows["p3"].active_week) == (2, 1, 0)
    assert rows["quan-a"].active_week == 4
    assert rows["tinh"].active_week == 4
    assert rows["quan-b"].active_week == 0  # B1 wrote the week after
    weeks = await weekly_active(db, org="quan-a", weeks=2, until=AS_OF, depth=0)
    # everyone who wrote counts here, the unregistered person too
    assert [(w.slug, w.week_start, w.active, w.messages) for w in weeks] == [
        ("quan-a", date(2023, 8, 7), 1, 2),
        ("quan-a", date(2023, 8, 14), 5, 11),
    ]
    units = await weekly_active(db, org="quan-a", weeks=2, until=AS_OF, depth=1)
    assert [(w.slug, w.week_start, w.active) for w in units] == [
        ("p1", date(2023, 8, 7), 1),
        ("p1", date(2023, 8, 14), 2),
        ("p2", date(2023, 8, 14), 1),
    ]


async def test_the_name_list(db: Database, compiled: CompiledBundle) -> None:
    await _seeded(db, compiled)
    rows = await name_list(db, "thu_thach", org="p3")
    assert [(r.name, r.unit, r.status) for r in rows] == [
        ("An C1", "Đoàn phường 3", STATUS_APPROVED),
        ("Bình C2", "Đoàn phường 3", STATUS_PENDING),
        ("Cường C3", "Đoàn phường 3", STATUS_REJECTED),
        ("Dũng C4", "Đoàn phường 3", STATUS_NONE),
        ("Em C5", "Đoàn phường 3", STATUS_NONE),
    ]
    assert rows[0].approved_at == at(8, 20) and rows[0].submitted_at == at(8, 18)
    everyone = await name_list(db, "thu_thach")
    assert len(everyone) == 18
    assert [r.unit_slug for r in everyone][:4] == ["quan-a", "p1", "p1", "p1"]  # file order
    august = await name_list(db, "thu_thach", org="t1", until=end_of_day(date(2023, 8, 31)))
    assert [(r.name, r.status) for r in august] == [("An T1", STATUS_APPROVED)]
