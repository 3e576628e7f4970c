"""Progress reports, computed in the database: aggregate SQL (SQLAlchemy Core, CTEs, GROUP BY,
window functions) that runs the same on SQLite and PostgreSQL. Nothing here loads one row per
participant into Python except the name list, which is one row per participant by nature.

How a participant belongs to a unit: their profile's unit field (`don_vi`, what `expect: unit`
saves: the unit's slug) names an organisation by slug, else by exact name; a value that names
neither files them under the district they chat with. Roll-ups go through the closure table
`organisation_paths`, so a node's figures are those of its whole subtree. Counting rules are in
docs/bao-cao.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    case,
    cast,
    func,
    literal,
    null,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import CTE

from bots.records.models import (
    Organisation,
    OrganisationFigures,
    OrganisationPath,
    Participant,
    ParticipantWeek,
    Review,
    ReviewDecision,
    Submission,
    SubmissionStatus,
)
from bots.records.writer import LOCAL_TZ, week_of

UNIT_FIELDS: tuple[str, ...] = ("don_vi",)

Sessions = async_sessionmaker[AsyncSession]


def reads_of(db: Any) -> Sessions:
    """The read-only session maker of a `bots.records.Database` (or a session maker)."""
    found = getattr(db, "reads", None) or getattr(db, "sessions", None) or db
    return found  # type: ignore[no-any-return]


def end_of_day(day: date) -> datetime:
    """The last moment of `day` in Vietnam time, as aware UTC."""
    return datetime.combine(day + timedelta(days=1), time(), LOCAL_TZ).astimezone(
        UTC
    ) - timedelta(microseconds=1)


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time(), LOCAL_TZ).astimezone(UTC)


def local_date(at: datetime | None) -> date | None:
    return at.astimezone(LOCAL_TZ).date() if at is not None else None


# -- building blocks ------------------------------------------------------------------------------


def unit_key(fields: Sequence[str] = UNIT_FIELDS) -> ColumnElement[Any]:
    """The participant's unit as their profile names it ('' counts as none)."""
    keys = [func.nullif(Participant.profile[f].as_string(), "") for f in fields or UNIT_FIELDS]
    return keys[0] if len(keys) == 1 else func.coalesce(*keys)


def participant_units(
    *,
    fields: Sequence[str] = UNIT_FIELDS,
    registered_only: bool = True,
    until: datetime | None = None,
    name: str = "pu",
) -> CTE:
    """(pid, unit_id, created_at): each participant's organisation. `registered_only`: only
    those whose profile names a unit (registration); otherwise everyone, by district."""
    key = unit_key(fields)
    by_slug = aliased(Organisation)
    by_name = aliased(Organisation)
    by_district = aliased(Organisation)
    unit_id = func.coalesce(
        select(by_slug.id).where(by_slug.slug == key).scalar_subquery(),
        select(func.min(by_name.id)).where(by_name.name == key).scalar_subquery(),
        select(by_district.id).where(by_district.slug == Participant.district).scalar_subquery(),
    )
    query = select(
        Participant.id.label("pid"), unit_id.label("unit_id"), Participant.created_at
    ).where(Participant.deleted_at.is_(None))
    if registered_only:
        query = query.where(key.is_not(None))
    if until is not None:
        query = query.where(Participant.created_at <= until)
    return query.cte(name)


def participant_submissions(
    campaign: str, *, wave: str | None = None, until: datetime | None = None
) -> CTE:
    """(pid, submitted_at, approved_at, pending, rejected) per participant for the campaign
    (and wave): the first submission, the first approval (the approving review's time, else
    the submission's last change), and how many are waiting or were sent back."""
    approvals = (
        select(Review.submission_id, func.min(Review.created_at).label("approved_at"))
        .where(Review.decision == ReviewDecision.APPROVE)
        .group_by(Review.submission_id)
        .subquery("approvals")
    )
    approved_at = case(
        (
            Submission.status == SubmissionStatus.APPROVED,
            func.coalesce(approvals.c.approved_at, Submission.updated_at),
        ),
        else_=null(),
    )
    conditions = [Submission.campaign == campaign, Submission.submitted_at.is_not(None)]
    if wave is not None:
        conditions.append(Submission.wave == wave)
    if until is not None:
        conditions.append(Submission.submitted_at <= until)
    per_submission = (
        select(
            Submission.participant_id.label("pid"),
            Submission.submitted_at.label("submitted_at"),
            approved_at.label("approved_at"),
            Submission.status.label("status"),
        )
        .select_from(Submission)
        .outerjoin(approvals, approvals.c.submission_id == Submission.id)
        .where(*conditions)
        .subquery("per_submission")
    )
    approved: Any = per_submission.c.approved_at
    if until is not None:
        approved = case((approved <= until, approved), else_=null())
    return (
        select(
            per_submission.c.pid,
            func.min(per_submission.c.submitted_at).label("submitted_at"),
            func.min(approved).label("approved_at"),
            func.sum(
                case((per_submission.c.status == SubmissionStatus.SUBMITTED, 1), else_=0)
            ).label("pending"),
            func.sum(
                case((per_submission.c.status == SubmissionStatus.REJECTED, 1), else_=0)
            ).label("rejected"),
        )
        .group_by(per_submission.c.pid)
        .cte("ps")
    )


def subtree(org: str | None) -> Any:
    """The ids of `org` and everything below it (None: the whole tree)."""
    if org is None:
        return None
    root = aliased(Organisation)
    return (
        select(OrganisationPath.descendant_id)
        .join(root, root.id == OrganisationPath.ancestor_id)
        .where(root.slug == org)
    )


# -- progress -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgressRow:
    """One organisation node's figures for a campaign (and wave): its whole subtree."""

    slug: str
    name: str
    parent: str | None
    depth: int
    area: str | None
    district: bool
    members: int | None
    quota: int | None  # people
    quota_label: str | None  # as written: "40%" or "2356"
    registered: int  # participants whose profile names a unit of the subtree
    submitted: int  # of them, those who submitted (in the wave, if one is given)
    approved: int  # of them, those with a submission approved
    active_week: int  # of them, those who wrote to the bot in the week of `as_of`
    reached_members_at: datetime | None  # approved reached the member count
    reached_members_submitted_at: datetime | None  # submitted reached the member count
    reached_quota_at: datetime | None  # approved reached the quota
    rank_in_area: int | None  # among siblings of the same area, by reached_members_at
    rank_in_area_submitted: int | None  # the same by submissions

    @staticmethod
    def _ratio(part: int, whole: int | None) -> float | None:
        return part / whole if whole else None

    @property
    def approved_of_members(self) -> float | None:
        return self._ratio(self.approved, self.members)

    @property
    def approved_of_quota(self) -> float | None:
        return self._ratio(self.approved, self.quota)

    @property
    def submitted_of_members(self) -> float | None:
        return self._ratio(self.submitted, self.members)

    @property
    def submitted_of_quota(self) -> float | None:
        return self._ratio(self.submitted, self.quota)


def _reached(ju: CTE, column: str, total: Any, name: str) -> CTE:
    """(org_id, at): when the n-th participant of a node's subtree got there, n = `total`."""
    at = ju.c[column]
    ranked = (
        select(
            OrganisationPath.ancestor_id.label("org_id"),
            at.label("at"),
            func.row_number()
            .over(partition_by=OrganisationPath.ancestor_id, order_by=(at, ju.c.pid))
            .label("rn"),
        )
        .select_from(ju.join(OrganisationPath, OrganisationPath.descendant_id == ju.c.unit_id))
        .where(at.is_not(None))
        .cte(f"{name}_ranked")
    )
    return (
        select(ranked.c.org_id, ranked.c.at)
        .join(OrganisationFigures, OrganisationFigures.organisation_id == ranked.c.org_id)
        .where(total > 0, ranked.c.rn == total)
        .cte(name)
    )


def progress_query(
    campaign: str,
    *,
    wave: str | None = None,
    org: str | None = None,
    as_of: datetime | None = None,
    until: datetime | None = None,
    unit_fields: Sequence[str] = UNIT_FIELDS,
) -> Any:
    """One row per organisation node in `org`'s subtree (every node when None), file order."""
    week = week_of(as_of or datetime.now(UTC))
    pu = participant_units(fields=unit_fields, until=until)
    ps = participant_submissions(campaign, wave=wave, until=until)
    ju = (
        select(pu.c.pid, pu.c.unit_id, ps.c.submitted_at, ps.c.approved_at)
        .select_from(pu.outerjoin(ps, ps.c.pid == pu.c.pid))
        .cte("ju")
    )
    active = select(ParticipantWeek.participant_id.label("pid")).where(
        ParticipantWeek.week_start == week
    ).cte("active")
    roll = (
        select(
            OrganisationPath.ancestor_id.label("org_id"),
            func.count(ju.c.pid).label("registered"),
            func.count(ju.c.submitted_at).label("submitted"),
            func.count(ju.c.approved_at).label("approved"),
            func.count(active.c.pid).label("active"),
        )
        .select_from(
            ju.join(OrganisationPath, OrganisationPath.descendant_id == ju.c.unit_id).outerjoin(
                active, active.c.pid == ju.c.pid
            )
        )
        .group_by(OrganisationPath.ancestor_id)
        .cte("roll")
    )
    figures = OrganisationFigures
    members_reached = _reached(ju, "approved_at", figures.members_total, "members_reached")
    members_submitted = _reached(ju, "submitted_at", figures.members_total, "members_submitted")
    quota_reached = _reached(ju, "approved_at", figures.quota_total, "quota_reached")

    parent = aliased(Organisation)
    approved = func.coalesce(roll.c.approved, 0)
    submitted = func.coalesce(roll.c.submitted, 0)

    def share(count: ColumnElement[Any]) -> ColumnElement[Any]:
        # Ranking key after the date: the share of members so far (-1: no member count).
        return case(
            (figures.members_total > 0, cast(count, Float) / figures.members_total), else_=-1.0
        )

    def rank(at: ColumnElement[Any], count: ColumnElement[Any]) -> ColumnElement[Any]:
        ordered = func.rank().over(
            partition_by=(Organisation.parent_id, Organisation.area),
            order_by=(case((at.is_(None), 1), else_=0), at, share(count).desc()),
        )
        return case((Organisation.area.is_not(None), ordered), else_=null())

    query: Any = (
        select(
            Organisation.slug,
            Organisation.name,
            parent.slug.label("parent"),
            figures.depth,
            Organisation.area,
            figures.district,
            figures.members_total,
            figures.quota_total,
            figures.quota_label,
            func.coalesce(roll.c.registered, 0).label("registered"),
            submitted.label("submitted"),
            approved.label("approved"),
            func.coalesce(roll.c.active, 0).label("active"),
            members_reached.c.at.label("reached_members_at"),
            members_submitted.c.at.label("reached_members_submitted_at"),
            quota_reached.c.at.label("reached_quota_at"),
            rank(members_reached.c.at, approved).label("rank_in_area"),
            rank(members_submitted.c.at, submitted).label("rank_in_area_submitted"),
        )
        .select_from(Organisation)
        .join(figures, figures.organisation_id == Organisation.id)
        .outerjoin(parent, parent.id == Organisation.parent_id)
        .outerjoin(roll, roll.c.org_id == Organisation.id)
        .outerjoin(members_reached, members_reached.c.org_id == Organisation.id)
        .outerjoin(members_submitted, members_submitted.c.org_id == Organisation.id)
        .outerjoin(quota_reached, quota_reached.c.org_id == Organisation.id)
        .where(figures.active.is_(True))
        .order_by(figures.position)
    )
    scope = subtree(org)
    if scope is not None:
        query = query.where(Organisation.id.in_(scope))
    return query


async def progress(
    db: Any,
    campaign: str,
    *,
    wave: str | None = None,
    org: str | None = None,
    as_of: datetime | None = None,
    until: datetime | None = None,
    unit_fields: Sequence[str] = UNIT_FIELDS,
) -> list[ProgressRow]:
    """Progress of `campaign` (optionally one wave) for every node of `org`'s subtree, in file
    order. `until`: count only what happened by then (a report "as of" a deadline)."""
    query = progress_query(
        campaign, wave=wave, org=org, as_of=as_of, until=until, unit_fields=unit_fields
    )
    async with reads_of(db)() as session:
        rows = (await session.execute(query)).all()
    return [
        ProgressRow(
            slug=r.slug,
            name=r.name,
            parent=r.parent,
            depth=r.depth,
            area=r.area,
            district=bool(r.district),
            members=r.members_total,
            quota=r.quota_total,
            quota_label=r.quota_label,
            registered=int(r.registered),
            submitted=int(r.submitted),
            approved=int(r.approved),
            active_week=int(r.active),
            reached_members_at=r.reached_members_at,
            reached_members_submitted_at=r.reached_members_submitted_at,
            reached_quota_at=r.reached_quota_at,
            rank_in_area=r.rank_in_area,
            rank_in_area_submitted=r.rank_in_area_submitted,
        )
        for r in rows
    ]


# -- weekly activity ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeekActivity:
    slug: str
    week_start: date  # Monday, Vietnam time
    active: int  # participants who wrote at least once that week
    messages: int


async def weekly_active(
    db: Any,
    *,
    org: str | None = None,
    weeks: int = 8,
    until: datetime | None = None,
    unit_fields: Sequence[str] = UNIT_FIELDS,
    depth: int | None = None,
) -> list[WeekActivity]:
    """Active participants per node and week, for the `weeks` weeks up to `until` (now).
    Everyone counts, registered or not: a participant without a unit counts for their
    district. `depth`: only nodes this many levels below `org` (0: `org` itself)."""
    last = week_of(until or datetime.now(UTC))
    first = last - timedelta(weeks=max(weeks, 1) - 1)
    pu = participant_units(fields=unit_fields, registered_only=False)
    query = (
        select(
            Organisation.slug,
            ParticipantWeek.week_start,
            func.count(ParticipantWeek.participant_id).label("active"),
            func.sum(ParticipantWeek.messages).label("messages"),
            OrganisationFigures.position,
        )
        .select_from(ParticipantWeek)
        .join(pu, pu.c.pid == ParticipantWeek.participant_id)
        .join(OrganisationPath, OrganisationPath.descendant_id == pu.c.unit_id)
        .join(Organisation, Organisation.id == OrganisationPath.ancestor_id)
        .join(OrganisationFigures, OrganisationFigures.organisation_id == Organisation.id)
        .where(ParticipantWeek.week_start >= first, ParticipantWeek.week_start <= last)
        .group_by(Organisation.slug, ParticipantWeek.week_start, OrganisationFigures.position)
        .order_by(OrganisationFigures.position, ParticipantWeek.week_start)
    )
    scope = subtree(org)
    if scope is not None:
        query = query.where(Organisation.id.in_(scope))
    if depth is not None:
        root = aliased(Organisation)
        below = (
            select(OrganisationPath.descendant_id)
            .join(root, root.id == OrganisationPath.ancestor_id)
            .where(OrganisationPath.depth == depth)
        )
        below = below.where(root.slug == org) if org is not None else below.where(
            root.parent_id.is_(None)
        )
        query = query.where(Organisation.id.in_(below))
    async with reads_of(db)() as session:
        rows = (await session.execute(query)).all()
    return [WeekActivity(r.slug, r.week_start, int(r.active), int(r.messages or 0)) for r in rows]


# -- the name list --------------------------------------------------------------------------------

STATUS_APPROVED = "Đã duyệt"
STATUS_PENDING = "Chờ duyệt"
STATUS_REJECTED = "Cần bổ sung"
STATUS_NONE = "Chưa nộp"


@dataclass(frozen=True, slots=True)
class NameRow:
    """One registered participant of the subtree and where they stand in the campaign."""

    name: str
    phone: str | None
    email: str | None
    unit: str
    unit_slug: str
    district: str
    registered_at: datetime
    status: str
    submitted_at: datetime | None
    approved_at: datetime | None


async def name_list(
    db: Any,
    campaign: str,
    *,
    org: str | None = None,
    wave: str | None = None,
    until: datetime | None = None,
    unit_fields: Sequence[str] = UNIT_FIELDS,
) -> list[NameRow]:
    """Registered participants of `org`'s subtree with their unit and status, by unit (file
    order) then name. `until` (a month's report: its last day) leaves out who registered later
    and counts only submissions and approvals made by then."""
    pu = participant_units(fields=unit_fields, until=until)
    ps = participant_submissions(campaign, wave=wave, until=until)
    status = case(
        (ps.c.approved_at.is_not(None), literal(STATUS_APPROVED)),
        (func.coalesce(ps.c.pending, 0) > 0, literal(STATUS_PENDING)),
        (func.coalesce(ps.c.rejected, 0) > 0, literal(STATUS_REJECTED)),
        (ps.c.submitted_at.is_not(None), literal(STATUS_PENDING)),
        else_=literal(STATUS_NONE),
    )
    query = (
        select(
            func.coalesce(Participant.name, "").label("name"),
            Participant.phone,
            Participant.email,
            Organisation.name.label("unit"),
            Organisation.slug.label("unit_slug"),
            Participant.district,
            Participant.created_at,
            status.label("status"),
            ps.c.submitted_at,
            ps.c.approved_at,
        )
        .select_from(pu)
        .join(Participant, Participant.id == pu.c.pid)
        .join(Organisation, Organisation.id == pu.c.unit_id)
        .join(OrganisationFigures, OrganisationFigures.organisation_id == Organisation.id)
        .outerjoin(ps, ps.c.pid == pu.c.pid)
        .order_by(OrganisationFigures.position, Participant.name, Participant.id)
    )
    scope = subtree(org)
    if scope is not None:
        query = query.where(pu.c.unit_id.in_(scope))
    async with reads_of(db)() as session:
        rows = (await session.execute(query)).all()
    return [
        NameRow(
            name=r.name,
            phone=r.phone,
            email=r.email,
            unit=r.unit,
            unit_slug=r.unit_slug,
            district=r.district,
            registered_at=r.created_at,
            status=r.status,
            submitted_at=r.submitted_at,
            approved_at=r.approved_at,
        )
        for r in rows
    ]


__all__ = [
    "STATUS_APPROVED",
    "STATUS_NONE",
    "STATUS_PENDING",
    "STATUS_REJECTED",
    "UNIT_FIELDS",
    "NameRow",
    "ProgressRow",
    "WeekActivity",
    "end_of_day",
    "local_date",
    "name_list",
    "participant_submissions",
    "participant_units",
    "progress",
    "progress_query",
    "reads_of",
    "start_of_day",
    "subtree",
    "unit_key",
    "weekly_active",
]
