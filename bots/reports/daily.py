"""Progress over time: per Vietnamese day, how many people of a subtree first submitted and were
first approved for a campaign (and wave), and the running totals — computed in SQL (GROUP BY a
local day, SUM() OVER for the totals) on SQLite and PostgreSQL alike.

The people counted are those `queries.progress` counts (registered participants of the subtree,
one first submission and one first approval each), so the last running total of a subtree
equals its `ProgressRow.submitted` / `.approved`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Integer, cast, func, literal, select, union_all

from bots.reports.queries import (
    UNIT_FIELDS,
    participant_submissions,
    participant_units,
    reads_of,
    subtree,
)

LOCAL_ZONE = "Asia/Ho_Chi_Minh"
SQLITE_OFFSET = "+7 hours"  # Vietnam has kept UTC+7, without daylight saving, since 1975


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date  # Vietnam time
    submitted: int  # people whose first submission was that day
    approved: int  # people first approved that day
    submitted_total: int  # ... up to and including that day
    approved_total: int


def _local_day(column: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return cast(func.timezone(LOCAL_ZONE, column), Date)
    return func.date(column, SQLITE_OFFSET)  # SQLite keeps naive UTC text


async def daily_progress(
    db: Any,
    campaign: str,
    *,
    wave: str | None = None,
    org: str | None = None,
    until: datetime | None = None,
    unit_fields: Sequence[str] = UNIT_FIELDS,
) -> list[DayCount]:
    """One row per day on which someone of `org`'s subtree first submitted or was first
    approved, oldest first, with running totals."""
    sessions = reads_of(db)
    async with sessions() as session:
        dialect = session.get_bind().dialect.name
        pu = participant_units(fields=unit_fields, until=until)
        ps = participant_submissions(campaign, wave=wave, until=until)
        people = select(ps.c.submitted_at, ps.c.approved_at).join(pu, pu.c.pid == ps.c.pid)
        scope = subtree(org)
        if scope is not None:
            people = people.where(pu.c.unit_id.in_(scope))
        people_cte = people.cte("people")
        events = union_all(
            select(
                _local_day(people_cte.c.submitted_at, dialect).label("day"),
                literal(1, Integer).label("submitted"),
                literal(0, Integer).label("approved"),
            ).where(people_cte.c.submitted_at.is_not(None)),
            select(
                _local_day(people_cte.c.approved_at, dialect).label("day"),
                literal(0, Integer).label("submitted"),
                literal(1, Integer).label("approved"),
            ).where(people_cte.c.approved_at.is_not(None)),
        ).subquery("events")
        per_day = (
            select(
                events.c.day,
                func.sum(events.c.submitted).label("submitted"),
                func.sum(events.c.approved).label("approved"),
            )
            .group_by(events.c.day)
            .subquery("per_day")
        )
        query = select(
            per_day.c.day,
            per_day.c.submitted,
            per_day.c.approved,
            func.sum(per_day.c.submitted).over(order_by=per_day.c.day).label("submitted_total"),
            func.sum(per_day.c.approved).over(order_by=per_day.c.day).label("approved_total"),
        ).order_by(per_day.c.day)
        rows = (await session.execute(query)).all()
    return [
        DayCount(
            day=r.day if isinstance(r.day, date) else date.fromisoformat(str(r.day)),
            submitted=int(r.submitted),
            approved=int(r.approved),
            submitted_total=int(r.submitted_total),
            approved_total=int(r.approved_total),
        )
        for r in rows
    ]


__all__ = ["DayCount", "daily_progress"]
