"""Cadre referrals counted by the Sốp Cộp rules (DESIGN.md, campaign 4), in SQL.

A *claim* is one citizen credited to one cadre:
- an entry a cadre reported (`action: report` with `report: cong_dan`) is the reporter's;
- an entry a citizen reported about themself (`report: tu_khai`) is credited to each cadre
  whose referral link they came in by for that flow (`referral_credits`, recorded from
  `ReferralRecorded`); a code maps to the registered cadre whose profile carries it
  (`ma_gioi_thieu`), else it stands for itself in the leaderboard.

A citizen is identified by the keyed hash of their citizen-ID number. For each cadre and citizen
the latest claim is judged, with one reason when it does not count, in this order:
1. `disputed`  — the same citizen is claimed by another cadre too: counts for neither;
2. `no_id`     — no citizen-ID number (cannot be checked for duplicates);
3. `excluded`  — union member, civil servant or armed forces (or no category given);
4. `early`     — activated before the campaign's start (or no activation date);
5. `one_account` — not both a VNeID account at level 1 or 2 and an active account on the
   national public-services portal.
A cadre's threshold is 20 citizens, 10 for a cadre registered as a union member
(`loai_can_bo` in the cadre registration). Individual award: ≥ 50. Collective award: a unit
whose cadres average ≥ 20 counted citizens. Decisions are in docs/bao-cao.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import CTE

from bots.records.models import (
    Organisation,
    OrganisationFigures,
    OrganisationPath,
    Participant,
    ReferralCredit,
    ReportedEntry,
)
from bots.reports.queries import UNIT_FIELDS, participant_units, reads_of, subtree

COUNTED = "counted"
DISPUTED = "disputed"
NO_ID = "no_id"
EXCLUDED = "excluded"
EARLY = "early"
ONE_ACCOUNT = "one_account"
REASONS = (DISPUTED, NO_ID, EXCLUDED, EARLY, ONE_ACCOUNT)
REASON_TEXT = {
    COUNTED: "Được tính",
    DISPUTED: "Trùng với cán bộ khác",
    NO_ID: "Thiếu số CCCD",
    EXCLUDED: "Không thuộc đối tượng tính",
    EARLY: "Kích hoạt trước ngày bắt đầu",
    ONE_ACCOUNT: "Chưa đủ hai tài khoản",
}


@dataclass(frozen=True, slots=True)
class CadreRules:
    """What counts, where each fact is found, and the thresholds. The defaults are Sốp Cộp's
    and the field names of districts/sop-cop.yaml."""

    campaign: str
    start: date | None = None  # activations from this day count (None: any day)
    cadre_kinds: tuple[str, ...] = ("cong_dan",)  # entries a cadre reports about a citizen
    self_kinds: tuple[str, ...] = ("tu_khai",)  # entries a citizen reports about themself
    name_field: str = "ten_cong_dan"
    phone_field: str = "sdt_cong_dan"
    category_field: str = "doi_tuong"
    excluded_categories: tuple[str, ...] = ("Đoàn viên", "Cán bộ, công chức", "Lực lượng vũ trang")
    level_field: str = "muc_vneid"
    levels: tuple[str, ...] = ("Mức 1", "Mức 2")
    portal_field: str = "tai_khoan_dvc"
    portal_yes: str = "có"
    date_field: str = "ngay_kich_hoat"
    cadre_kind_field: str = "loai_can_bo"  # in the cadre's profile (cadre registration)
    member_kinds: tuple[str, ...] = ("Đoàn viên",)
    code_field: str = "ma_gioi_thieu"  # the cadre's referral code, in their profile
    threshold: int = 20
    member_threshold: int = 10
    individual_award: int = 50
    collective_average: float = 20.0

    @classmethod
    def for_campaign(
        cls, campaigns: Mapping[str, Any], campaign: str, **overrides: Any
    ) -> CadreRules:
        """The rules of `campaign`: counting starts on its first wave's first day."""
        found = campaigns.get(campaign)
        waves = getattr(found, "waves", ()) or ()
        start = min((w.from_ for w in waves), default=None)
        return replace(cls(campaign=campaign, start=start), **overrides)


@dataclass(frozen=True, slots=True)
class CadreRow:
    """One cadre on the leaderboard."""

    key: str  # "p:<participant id>" or "c:<referral code>" (a code no cadre registered)
    rank: int
    name: str
    code: str | None
    kind: str | None  # loai_can_bo
    unit: str | None
    unit_slug: str | None
    threshold: int
    claimed: int  # distinct citizens credited
    counted: int
    disputed: int
    no_id: int
    excluded: int
    early: int
    one_account: int
    meets_threshold: bool
    individual_award: bool


@dataclass(frozen=True, slots=True)
class UnitRow:
    """One organisation node: its registered cadres and their counted citizens."""

    slug: str
    name: str
    depth: int
    cadres: int
    counted: int
    meeting_threshold: int
    average: float | None
    collective_award: bool


@dataclass(frozen=True, slots=True)
class CitizenRow:
    """One citizen credited to one cadre (the latest claim), for the name list."""

    name: str
    phone: str | None
    category: str | None
    level: str | None
    portal: str | None
    activated_on: date | None
    reported_at: datetime
    cadre: str
    unit: str | None
    reason: str  # COUNTED or one of REASONS

    @property
    def counted(self) -> bool:
        return self.reason == COUNTED


# -- the claims and their judgement ---------------------------------------------------------------


def _field(name: str) -> ColumnElement[Any]:
    return func.nullif(ReportedEntry.fields[name].as_string(), "")


def _claims(rules: CadreRules, until: datetime | None) -> CTE:
    """(entry_id, subject_hash, created_at, cadre_key, cadre_pid, district, facts...)."""
    facts = [
        _field(rules.name_field).label("citizen_name"),
        _field(rules.phone_field).label("citizen_phone"),
        _field(rules.category_field).label("category"),
        _field(rules.level_field).label("level"),
        _field(rules.portal_field).label("portal"),
        _field(rules.date_field).label("activated_on"),
    ]
    base = [
        ReportedEntry.id.label("entry_id"),
        ReportedEntry.subject_hash,
        ReportedEntry.created_at,
        ReportedEntry.district,
    ]
    scope = [ReportedEntry.campaign == rules.campaign]
    if until is not None:
        scope.append(ReportedEntry.created_at <= until)
    branches: list[Any] = []
    if rules.cadre_kinds:
        branches.append(
            select(
                *base,
                ReportedEntry.participant_id.label("cadre_pid"),
                cast(null(), String(64)).label("code"),
                *facts,
            ).where(*scope, ReportedEntry.kind.in_(rules.cadre_kinds))
        )
    if rules.self_kinds:
        owner = aliased(Participant)
        code_owner = (
            select(func.min(owner.id))
            .where(
                owner.deleted_at.is_(None),
                func.lower(func.trim(owner.profile[rules.code_field].as_string()))
                == func.lower(ReferralCredit.code),
            )
            .scalar_subquery()
        )
        branches.append(
            select(
                *base,
                code_owner.label("cadre_pid"),
                func.lower(ReferralCredit.code).label("code"),
                *facts,
            )
            .select_from(ReportedEntry)
            .join(
                ReferralCredit,
                and_(
                    ReferralCredit.participant_id == ReportedEntry.participant_id,
                    ReferralCredit.flow == ReportedEntry.flow,
                ),
            )
            .where(*scope, ReportedEntry.kind.in_(rules.self_kinds))
        )
    if not branches:
        raise ValueError("CadreRules names no entry kinds")
    combined: Any = union_all(*branches) if len(branches) > 1 else branches[0]
    claims = combined.subquery("raw_claims")
    cadre_key = case(
        (claims.c.cadre_pid.is_not(None), literal("p:") + cast(claims.c.cadre_pid, String)),
        else_=literal("c:") + claims.c.code,
    )
    return select(*claims.c, cadre_key.label("cadre_key")).cte("claims")


def _judged(rules: CadreRules, until: datetime | None) -> CTE:
    """The latest claim of each (cadre, citizen) with the reason it does or does not count."""
    claims = _claims(rules, until)
    citizen = func.coalesce(
        claims.c.subject_hash, literal("e:") + cast(claims.c.entry_id, String)
    )
    latest = (
        select(
            *claims.c,
            func.row_number()
            .over(
                partition_by=(claims.c.cadre_key, citizen),
                order_by=(claims.c.created_at.desc(), claims.c.entry_id.desc()),
            )
            .label("rn"),
        )
        .cte("latest")
    )
    disputed = (
        select(claims.c.subject_hash)
        .where(claims.c.subject_hash.is_not(None))
        .group_by(claims.c.subject_hash)
        .having(func.count(claims.c.cadre_key.distinct()) > 1)
    )
    c = latest.c
    whens: list[tuple[ColumnElement[bool], ColumnElement[str]]] = [
        (c.subject_hash.in_(disputed), literal(DISPUTED)),
        (c.subject_hash.is_(None), literal(NO_ID)),
        (
            or_(c.category.is_(None), c.category.in_(rules.excluded_categories)),
            literal(EXCLUDED),
        ),
    ]
    if rules.start is not None:
        early = or_(c.activated_on.is_(None), c.activated_on < rules.start.isoformat())
        whens.append((early, literal(EARLY)))
    whens.append(
        (
            or_(
                c.level.is_(None),
                c.level.not_in(rules.levels),
                c.portal.is_(None),
                c.portal != rules.portal_yes,
            ),
            literal(ONE_ACCOUNT),
        )
    )
    reason = case(*whens, else_=literal(COUNTED))
    return select(*c, reason.label("reason")).where(c.rn == 1).cte("judged")


def _per_cadre(judged: CTE) -> CTE:
    def tally(name: str) -> ColumnElement[Any]:
        return func.sum(case((judged.c.reason == name, 1), else_=0)).label(name)

    return (
        select(
            judged.c.cadre_key,
            func.max(judged.c.cadre_pid).label("cadre_pid"),
            func.max(judged.c.district).label("district"),
            func.count().label("claimed"),
            tally(COUNTED),
            *(tally(r) for r in REASONS),
        )
        .group_by(judged.c.cadre_key)
        .cte("per_cadre")
    )


def _board(
    rules: CadreRules, until: datetime | None, unit_fields: Sequence[str]
) -> tuple[CTE, CTE]:
    """(board, judged): every cadre — registered (their profile has the cadre kind) or
    credited — with unit, threshold and tallies."""
    judged = _judged(rules, until)
    per_cadre = _per_cadre(judged)
    kind = func.nullif(Participant.profile[rules.cadre_kind_field].as_string(), "")
    registered = select(
        (literal("p:") + cast(Participant.id, String)).label("cadre_key"),
        Participant.id.label("cadre_pid"),
    ).where(kind.is_not(None), Participant.deleted_at.is_(None))
    keys = union(
        registered, select(per_cadre.c.cadre_key, per_cadre.c.cadre_pid)
    ).subquery("cadre_keys")
    pu = participant_units(fields=unit_fields, name="cadre_units")
    district = aliased(Organisation)
    cadre = aliased(Participant)
    cadre_kind = func.nullif(cadre.profile[rules.cadre_kind_field].as_string(), "")
    counted = func.coalesce(per_cadre.c[COUNTED], 0)
    threshold = case(
        (cadre_kind.in_(rules.member_kinds), rules.member_threshold), else_=rules.threshold
    )
    code = func.coalesce(
        func.nullif(cadre.profile[rules.code_field].as_string(), ""),
        case(
            (keys.c.cadre_key.like("c:%"), func.substr(keys.c.cadre_key, 3)), else_=null()
        ),
    )
    name = func.coalesce(cadre.name, code, keys.c.cadre_key)
    board = (
        select(
            keys.c.cadre_key,
            keys.c.cadre_pid,
            name.label("name"),
            code.label("code"),
            cadre_kind.label("kind"),
            func.coalesce(pu.c.unit_id, district.id).label("unit_id"),
            threshold.label("threshold"),
            func.coalesce(per_cadre.c.claimed, 0).label("claimed"),
            counted.label("counted"),
            *(func.coalesce(per_cadre.c[r], 0).label(r) for r in REASONS),
            case((counted >= threshold, 1), else_=0).label("meets"),
            case((counted >= rules.individual_award, 1), else_=0).label("award"),
        )
        .select_from(keys)
        .outerjoin(cadre, cadre.id == keys.c.cadre_pid)
        .outerjoin(per_cadre, per_cadre.c.cadre_key == keys.c.cadre_key)
        .outerjoin(pu, pu.c.pid == keys.c.cadre_pid)
        .outerjoin(district, district.slug == per_cadre.c.district)
        .cte("board")
    )
    return board, judged


# -- the reports ----------------------------------------------------------------------------------


async def cadre_board(
    db: Any,
    rules: CadreRules,
    *,
    org: str | None = None,
    until: datetime | None = None,
    awards_only: bool = False,
    unit_fields: Sequence[str] = UNIT_FIELDS,
) -> list[CadreRow]:
    """The leaderboard: cadres by counted citizens (ties share a rank). `org`: cadres of that
    subtree only; `until`: reports made by then; `awards_only`: the individual award list."""
    board, _ = _board(rules, until, unit_fields)
    unit = aliased(Organisation)
    query = (
        select(
            board,
            unit.name.label("unit_name"),
            unit.slug.label("unit_slug"),
            func.rank().over(order_by=board.c.counted.desc()).label("rank"),
        )
        .select_from(board)
        .outerjoin(unit, unit.id == board.c.unit_id)
    )
    scope = subtree(org)
    if scope is not None:
        query = query.where(board.c.unit_id.in_(scope))
    if awards_only:
        query = query.where(board.c.award == 1)
    query = query.order_by(board.c.counted.desc(), board.c.name, board.c.cadre_key)
    async with reads_of(db)() as session:
        rows = (await session.execute(query)).all()
    return [
        CadreRow(
            key=r.cadre_key,
            rank=int(r.rank),
            name=r.name,
            code=r.code,
            kind=r.kind,
            unit=r.unit_name,
            unit_slug=r.unit_slug,
            threshold=int(r.threshold),
            claimed=int(r.claimed),
            counted=int(r.counted),
            disputed=int(r.disputed),
            no_id=int(r.no_id),
            excluded=int(r.excluded),
            early=int(r.early),
            one_account=int(r.one_account),
            meets_threshold=bool(r.meets),
            individual_award=bool(r.award),
        )
        for r in rows
    ]


async def unit_board(
    db: Any,
    rules: CadreRules,
    *,
    org: str | None = None,
    until: datetime | None = None,
    awards_only: bool = False,
    unit_fields: Sequence[str] = UNIT_FIELDS,
) -> list[UnitRow]:
    """Each node with registered cadres in its subtree: how many, their counted citizens and
    the average per cadre (collective award at `rules.collective_average`). File order."""
    board, _ = _board(rules, until, unit_fields)
    registered = (
        select(board)
        .where(board.c.cadre_pid.is_not(None), board.c.unit_id.is_not(None))
        .subquery("registered_cadres")
    )
    cadres = func.count(registered.c.cadre_key)
    counted = func.coalesce(func.sum(registered.c.counted), 0)
    average = cast(counted, Float) / cadres
    query = (
        select(
            Organisation.slug,
            Organisation.name,
            OrganisationFigures.depth,
            cadres.label("cadres"),
            counted.label("counted"),
            func.coalesce(func.sum(registered.c.meets), 0).label("meeting"),
            average.label("average"),
        )
        .select_from(registered)
        .join(OrganisationPath, OrganisationPath.descendant_id == registered.c.unit_id)
        .join(Organisation, Organisation.id == OrganisationPath.ancestor_id)
        .join(OrganisationFigures, OrganisationFigures.organisation_id == Organisation.id)
        .group_by(
            Organisation.slug, Organisation.name, OrganisationFigures.depth,
            OrganisationFigures.position,
        )
        .order_by(OrganisationFigures.position)
    )
    scope = subtree(org)
    if scope is not None:
        query = query.where(Organisation.id.in_(scope))
    if awards_only:
        query = query.having(average >= rules.collective_average)
    async with reads_of(db)() as session:
        rows = (await session.execute(query)).all()
    return [
        UnitRow(
            slug=r.slug,
            name=r.name,
            depth=int(r.depth),
            cadres=int(r.cadres),
            counted=int(r.counted),
            meeting_threshold=int(r.meeting),
            average=float(r.average) if r.average is not None else None,
            collective_award=r.average is not None and r.average >= rules.collective_average,
        )
        for r in rows
    ]


async def citizen_list(
    db: Any,
    rules: CadreRules,
    *,
    org: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    unit_fields: Sequence[str] = UNIT_FIELDS,
) -> list[CitizenRow]:
    """Citizens credited to cadres (the latest claim of each pair) with whether they count and
    why not — the monthly name list. `since`/`until`: reported in that period; duplicates and
    latest claims are judged over everything reported by `until`."""
    board, judged = _board(rules, until, unit_fields)
    unit = aliased(Organisation)
    query = (
        select(
            judged.c.citizen_name,
            judged.c.citizen_phone,
            judged.c.category,
            judged.c.level,
            judged.c.portal,
            judged.c.activated_on,
            judged.c.created_at,
            judged.c.reason,
            board.c.name.label("cadre"),
            unit.name.label("unit"),
        )
        .select_from(judged)
        .join(board, board.c.cadre_key == judged.c.cadre_key)
        .outerjoin(unit, unit.id == board.c.unit_id)
        .order_by(unit.name, board.c.name, judged.c.created_at, judged.c.entry_id)
    )
    scope = subtree(org)
    if scope is not None:
        query = query.where(board.c.unit_id.in_(scope))
    if since is not None:
        query = query.where(judged.c.created_at >= since)
    async with reads_of(db)() as session:
        rows = (await session.execute(query)).all()
    return [
        CitizenRow(
            name=r.citizen_name or "",
            phone=r.citizen_phone,
            category=r.category,
            level=r.level,
            portal=r.portal,
            activated_on=_date(r.activated_on),
            reported_at=r.created_at,
            cadre=r.cadre,
            unit=r.unit,
            reason=r.reason,
        )
        for r in rows
    ]


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


__all__ = [
    "COUNTED",
    "DISPUTED",
    "EARLY",
    "EXCLUDED",
    "NO_ID",
    "ONE_ACCOUNT",
    "REASONS",
    "REASON_TEXT",
    "CadreRow",
    "CadreRules",
    "CitizenRow",
    "UnitRow",
    "cadre_board",
    "citizen_list",
    "unit_board",
]
