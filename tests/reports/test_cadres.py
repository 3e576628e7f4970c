"""The Sốp Cộp counting rules on the seeded cadre reports (tests/reports/seed.py), against
numbers worked out by hand, on SQLite and PostgreSQL.

  K1 Lò Văn Một (x1, cán bộ, code CB01): 50 valid + X + excluded + early + one account
     + a citizen reported twice (latest valid) + one without ID, + S3 by the cb01 link
     → 57 citizens, counted 51 (50 + the corrected one), disputed 2 (X, S3)
  K2 Quàng Thị Hai (x1, cán bộ): 19 valid + X → 20 citizens, counted 19, disputed 1
  K3 Cà Văn Ba (x2, đoàn viên: threshold 10): 9 valid + S1 by the dv03 link on 20/5 → 10
  cb99 (a link no cadre registered): S2 counted, S3 disputed → 2 citizens, counted 1
  K4 Lường Văn Bốn (x2, cán bộ): nothing
  S4's credit is for another flow: credited to no one.
"""

from __future__ import annotations

from datetime import date, datetime

from bots.records import Database
from bots.reports.cadres import (
    COUNTED,
    DISPUTED,
    EARLY,
    EXCLUDED,
    NO_ID,
    ONE_ACCOUNT,
    CadreRow,
    CadreRules,
    cadre_board,
    citizen_list,
    unit_board,
)
from bots.reports.organisations import sync_organisations
from bots.reports.queries import end_of_day, start_of_day
from flows.compiler import CompiledBundle
from tests.reports.seed import seed_cadres


async def _seeded(db: Database, compiled: CompiledBundle) -> CadreRules:
    await sync_organisations(db, compiled)
    await seed_cadres(db)
    rules = CadreRules.for_campaign(compiled.campaigns, "vneid")
    assert rules.start == date(2023, 4, 21)  # the first wave's first day
    return rules


def line(r: CadreRow) -> tuple[object, ...]:
    return (r.rank, r.name, r.unit_slug, r.threshold, r.claimed, r.counted,
            r.meets_threshold, r.individual_award)


async def test_the_leaderboard(db: Database, compiled: CompiledBundle) -> None:
    rules = await _seeded(db, compiled)
    board = await cadre_board(db, rules)
    assert [line(r) for r in board] == [
        (1, "Lò Văn Một", "x1", 20, 57, 51, True, True),
        (2, "Quàng Thị Hai", "x1", 20, 20, 19, False, False),  # X cost the 20th
        (3, "Cà Văn Ba", "x2", 10, 10, 10, True, False),  # a member: 10 is enough
        (4, "cb99", "sc", 20, 2, 1, False, False),  # filed under the links' district
        (5, "Lường Văn Bốn", "x2", 20, 0, 0, False, False),
    ]
    k1, k2, k3, cb99, k4 = board
    assert (k1.disputed, k1.no_id, k1.excluded, k1.early, k1.one_account) == (2, 1, 1, 1, 1)
    assert (k2.disputed, k2.no_id, k2.excluded, k2.early, k2.one_account) == (1, 0, 0, 0, 0)
    assert (cb99.disputed, cb99.counted) == (1, 1)
    assert (k1.code, k3.code, cb99.code, k4.code) == ("CB01", "dv03", "cb99", "chưa")
    assert (k1.kind, k3.kind, cb99.kind) == ("Cán bộ, công chức", "Đoàn viên", None)
    assert (k1.unit, cb99.unit) == ("Đoàn xã 1", "Huyện đoàn SC")
    assert [r.name for r in await cadre_board(db, rules, awards_only=True)] == ["Lò Văn Một"]
    assert [r.name for r in await cadre_board(db, rules, org="x2")] == ["Cà Văn Ba",
                                                                         "Lường Văn Bốn"]


async def test_collective_awards_average_the_registered_cadres(
    db: Database, compiled: CompiledBundle
) -> None:
    rules = await _seeded(db, compiled)
    units = await unit_board(db, rules)
    assert [(u.slug, u.cadres, u.counted, u.meeting_threshold, u.average, u.collective_award)
            for u in units] == [
        ("sc", 4, 80, 2, 20.0, True),  # (51 + 19 + 10 + 0) / 4: exactly the bar
        ("x1", 2, 70, 1, 35.0, True),
        ("x2", 2, 10, 1, 5.0, False),
    ]
    assert [u.slug for u in await unit_board(db, rules, awards_only=True)] == ["sc", "x1"]


async def test_a_wave_report_counts_what_was_reported_by_its_deadline(
    db: Database, compiled: CompiledBundle
) -> None:
    rules = await _seeded(db, compiled)
    deadline = end_of_day(date(2023, 5, 12))  # Đợt 1: S1 came on 20/5
    k3 = next(r for r in await cadre_board(db, rules, until=deadline) if r.name == "Cà Văn Ba")
    assert (k3.claimed, k3.counted, k3.meets_threshold) == (9, 9, False)
    sc = (await unit_board(db, rules, until=deadline))[0]
    assert (sc.slug, sc.counted, sc.average, sc.collective_award) == ("sc", 79, 19.75, False)


async def test_thresholds_and_start_are_rules_not_constants(
    db: Database, compiled: CompiledBundle
) -> None:
    rules = await _seeded(db, compiled)
    stricter = CadreRules.for_campaign(
        compiled.campaigns, "vneid", start=date(2023, 4, 26), member_threshold=11
    )
    board = {r.name: r for r in await cadre_board(db, stricter)}
    # every seeded activation is on 25/4 except the early one: now nothing counts
    assert board["Lò Văn Một"].counted == 0
    assert board["Cà Văn Ba"].threshold == 11
    assert rules.threshold == 20


async def test_the_citizen_name_list(db: Database, compiled: CompiledBundle) -> None:
    rules = await _seeded(db, compiled)
    everyone = await citizen_list(db, rules)
    assert len(everyone) == 57 + 20 + 10 + 2
    reasons = [r.reason for r in everyone]  # X and S3 are disputed twice each
    assert reasons.count(COUNTED) == 51 + 19 + 10 + 1
    assert (reasons.count(DISPUTED), reasons.count(NO_ID), reasons.count(EXCLUDED),
            reasons.count(EARLY), reasons.count(ONE_ACCOUNT)) == (4, 1, 1, 1, 1)
    may = await citizen_list(db, rules, org="x2", since=start_of_day(date(2023, 5, 15)),
                             until=end_of_day(date(2023, 5, 31)))
    assert [(r.name, r.cadre, r.unit, r.activated_on, r.reason) for r in may] == [
        ("Tự khai s1", "Cà Văn Ba", "Đoàn xã 2", date(2023, 4, 25), COUNTED)
    ]
    twice = [r for r in everyone if r.cadre == "Lò Văn Một" and r.reason == COUNTED
             and r.reported_at.day == 3]
    assert len(twice) == 1  # the corrected report, once
    assert isinstance(twice[0].reported_at, datetime)
