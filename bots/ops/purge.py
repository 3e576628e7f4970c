"""`loa purge --campaign C`: delete a campaign's evidence and its participants' personal data
once its retention period is over, keeping the anonymous counts reports are made of.

    plan = await purge(db, files, "cong_dan_so", bundle, now=now, dry_run=True)

When: a campaign's `retention_days` (flows.yaml) count from the day after its last wave ends
(Vietnam time); a campaign without waves counts from its last submission change. Before that
day, or without `retention_days`, the purge is refused unless forced.

What goes, in one transaction (the same rules as "xóa dữ liệu của tôi", bots/records/writer.py):

- every evidence item of the campaign's submissions (screenshots show citizen-ID numbers,
  birth dates, addresses), with the reviews of those items (their reasons may quote them);
  then each file, unless an evidence item that stays still uses the same bytes;
- the reasons written on the campaign's remaining (whole-submission) reviews;
- of each participant of the campaign: the profile except the entries naming their unit,
  name, phone, email, consent; organiser notifications about them are blanked. Not for a
  participant who also takes part in a campaign whose retention still runs: that one keeps
  their profile until the later campaign is purged;
- the fields of entries reported for the campaign (`action: report`), except the keyed hash
  of a citizen-ID number, which the counting rules need.

What stays: participants and channel identities (rows, no personal data), submissions with
their campaign, wave, status and times, approvals, tags and referral credits — so submission
and approval counts per unit and wave are what they were. A purged participant is marked
`purged_at` (not `deleted_at`, which means the person asked, and which reports leave out).

Every purge writes one `campaign_purged` audit entry, and one `personal_data_purged` entry per
participant. On SQLite the database then checkpoints its write-ahead log, so the deleted bytes
leave the files on disk too (the records database overwrites deleted content: secure_delete).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bots.records.db import Database
from bots.records.files import FileStore
from bots.records.models import (
    AuditEntry,
    EvidenceItem,
    OrganiserNotification,
    Participant,
    ReportedEntry,
    Review,
    Submission,
)
from bots.records.writer import units_only
from flows.events import CITIZEN_ID_HASH
from flows.schema import Campaign, ExpectKind

log = logging.getLogger("loa.ops.purge")

try:
    from zoneinfo import ZoneInfo

    LOCAL_TZ: tzinfo = ZoneInfo("Asia/Ho_Chi_Minh")
except Exception:  # no tz database: Vietnam has kept UTC+7 without DST since 1975
    LOCAL_TZ = timezone(timedelta(hours=7))

ACTOR = "ops:purge"
PURGED_TEXT = "(nội dung đã xóa khi hết thời hạn lưu trữ)"
CHUNK = 500  # ids per IN (…) list: far below SQLite's and PostgreSQL's parameter limits


class PurgeRefused(RuntimeError):
    """Too early, or nothing configured to decide by (Vietnamese, for the operator)."""


@dataclass(frozen=True, slots=True)
class Retention:
    campaign: str
    days: int | None  # retention_days (None: none configured)
    ends: date | None  # last day of the last wave (None: no waves)
    purge_from: datetime | None  # aware UTC; None: no retention period can be computed

    def over(self, now: datetime) -> bool:
        return self.purge_from is not None and now >= self.purge_from

    def describe(self) -> str:
        if self.days is None:
            return f"chiến dịch {self.campaign} chưa đặt retention_days trong flows.yaml"
        if self.purge_from is None:
            return f"chiến dịch {self.campaign} chưa có bài nộp nào để tính thời hạn lưu trữ"
        local = self.purge_from.astimezone(LOCAL_TZ)
        start = f"đợt cuối kết thúc {self.ends:%d/%m/%Y}" if self.ends else "bài nộp cuối cùng"
        return (
            f"giữ {self.days} ngày sau {start}: được xóa từ {local:%H:%M %d/%m/%Y} "
            "(giờ Việt Nam)"
        )


@dataclass(slots=True)
class PurgePlan:
    campaign: str
    retention: Retention
    submissions: int = 0
    evidence_items: int = 0
    participants: int = 0  # participants of the campaign
    erased: list[int] = field(default_factory=list)  # whose personal data goes now
    kept: list[int] = field(default_factory=list)  # in a campaign still within retention
    already: int = 0  # purged before
    files_deleted: int = 0
    files_shared: int = 0  # still used by evidence that stays
    entries: int = 0  # reported entries blanked
    forced: bool = False
    dry_run: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "retention_days": self.retention.days,
            "purge_from": self.retention.purge_from.isoformat()
            if self.retention.purge_from
            else None,
            "submissions": self.submissions,
            "evidence_items": self.evidence_items,
            "participants": self.participants,
            "participants_erased": len(self.erased),
            "participants_kept": len(self.kept),
            "files_deleted": self.files_deleted,
            "files_shared": self.files_shared,
            "reported_entries": self.entries,
            "forced": self.forced,
        }


def end_of_day(day: date) -> datetime:
    """The first moment after `day` in Vietnam time, as aware UTC."""
    return datetime.combine(day + timedelta(days=1), time(), LOCAL_TZ).astimezone(UTC)


def retention_of(
    campaign: str, definition: Campaign | None, last_activity: datetime | None
) -> Retention:
    days = definition.retention_days if definition is not None else None
    ends = max((wave.to for wave in definition.waves), default=None) if definition else None
    if days is None:
        return Retention(campaign, None, ends, None)
    start = end_of_day(ends) if ends is not None else last_activity
    return Retention(campaign, days, ends, start + timedelta(days=days) if start else None)


def unit_fields(field_kinds: Mapping[str, ExpectKind]) -> frozenset[str]:
    """Profile fields that hold a unit (answers of `expect: unit`)."""
    return frozenset(name for name, kind in field_kinds.items() if kind is ExpectKind.UNIT)


def _chunks(values: Iterable[int]) -> Iterable[list[int]]:
    batch: list[int] = []
    for value in values:
        batch.append(value)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


async def _last_activity(session: AsyncSession, campaign: str) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.max(Submission.updated_at)).where(Submission.campaign == campaign)
    )
    if result is not None and result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result


async def _retained_elsewhere(
    session: AsyncSession,
    participant_ids: list[int],
    campaign: str,
    campaigns: Mapping[str, Campaign],
    now: datetime,
) -> set[int]:
    """Participants who also take part in a campaign whose data must still be kept: one in
    flows.yaml whose retention has not run out, or that has no `retention_days` at all."""
    held: set[int] = set()
    others: dict[str, set[int]] = {}
    for batch in _chunks(participant_ids):
        rows = await session.execute(
            select(Submission.campaign, Submission.participant_id)
            .where(Submission.participant_id.in_(batch), Submission.campaign != campaign)
            .distinct()
        )
        for name, pid in rows:
            others.setdefault(name, set()).add(pid)
    for name, pids in others.items():
        definition = campaigns.get(name)
        if definition is None:
            continue  # gone from flows.yaml: nothing says to keep it (purge it with --force)
        retention = retention_of(name, definition, await _last_activity(session, name))
        if not retention.over(now):
            held |= pids
    return held


async def purge(
    db: Database,
    files: FileStore | None,
    campaign: str,
    campaigns: Mapping[str, Campaign],
    *,
    unit_field_names: frozenset[str] = frozenset(),
    now: datetime | None = None,
    force: bool = False,
    dry_run: bool = False,
    actor: str = ACTOR,
) -> PurgePlan:
    """Purge `campaign` (see the module docstring); returns what was (or, with `dry_run`,
    would be) done. Raises `PurgeRefused` before the retention period ends unless `force`."""
    now = now or datetime.now(UTC)
    definition = campaigns.get(campaign)
    async with db.reads() as session:
        retention = retention_of(campaign, definition, await _last_activity(session, campaign))
    if not force:
        if definition is None:
            raise PurgeRefused(
                f"không có chiến dịch {campaign!r} trong flows.yaml (thêm --force nếu vẫn muốn "
                "xóa dữ liệu của nó)"
            )
        if not retention.over(now):
            raise PurgeRefused(f"chưa hết thời hạn lưu trữ: {retention.describe()}")
    plan = PurgePlan(campaign, retention, forced=force, dry_run=dry_run)
    doomed: set[str] = set()
    async with db.sessions() as session, session.begin():
        submission_ids = list(
            await session.scalars(select(Submission.id).where(Submission.campaign == campaign))
        )
        participant_ids = sorted(
            set(
                await session.scalars(
                    select(Submission.participant_id).where(Submission.campaign == campaign)
                )
            )
        )
        plan.submissions = len(submission_ids)
        plan.participants = len(participant_ids)
        for batch in _chunks(submission_ids):
            rows = (
                await session.execute(
                    select(EvidenceItem.id, EvidenceItem.sha256).where(
                        EvidenceItem.submission_id.in_(batch)
                    )
                )
            ).all()
            plan.evidence_items += len(rows)
            doomed |= {sha for _, sha in rows if sha}
        held = await _retained_elsewhere(session, participant_ids, campaign, campaigns, now)
        participants: dict[int, Participant] = {}
        for batch in _chunks(participant_ids):
            for participant in await session.scalars(
                select(Participant).where(Participant.id.in_(batch))
            ):
                participants[participant.id] = participant
        for pid in participant_ids:
            participant = participants[pid]
            if pid in held:
                plan.kept.append(pid)
            elif participant.purged_at is not None and not _personal(participant):
                plan.already += 1
            else:
                plan.erased.append(pid)
        plan.entries = await _reported_entries(session, campaign, blank=False)
        if dry_run:
            still_used = await _used_elsewhere(session, doomed, submission_ids)
            plan.files_shared = len(still_used)
            plan.files_deleted = len(doomed - still_used)
            await session.rollback()
            return plan

        for batch in _chunks(submission_ids):
            # Reviews of the items first: PostgreSQL and SQLite would cascade, but saying it
            # keeps the purge independent of a foreign-key setting.
            item_ids = select(EvidenceItem.id).where(EvidenceItem.submission_id.in_(batch))
            await session.execute(delete(Review).where(Review.evidence_id.in_(item_ids)))
            await session.execute(delete(EvidenceItem).where(EvidenceItem.submission_id.in_(batch)))
            await session.execute(
                update(Review).where(Review.submission_id.in_(batch)).values(reason=None)
            )
        for pid in plan.erased:
            participant = participants[pid]
            participant.profile = await units_only(
                session, participant.profile, keep=unit_field_names
            )
            participant.name = participant.phone = participant.email = None
            participant.consent_given_at = None
            participant.consent_text = None
            participant.purged_at = now
            participant.updated_at = now
            session.add(
                AuditEntry(
                    at=now,
                    actor=actor,
                    action="personal_data_purged",
                    participant_id=pid,
                    detail={"campaign": campaign},
                )
            )
        for batch in _chunks(plan.erased):
            await session.execute(
                update(OrganiserNotification)
                .where(OrganiserNotification.participant_id.in_(batch))
                .values(text=PURGED_TEXT)
            )
        plan.entries = await _reported_entries(session, campaign, blank=True)
        still_used = await _used_elsewhere(session, doomed, [])
        plan.files_shared = len(still_used)
        removable = doomed - still_used
        plan.files_deleted = len(removable)
        session.add(
            AuditEntry(
                at=now, actor=actor, action="campaign_purged", participant_id=None,
                detail=plan.summary(),
            )
        )
    # Files go once the rows naming them are gone for good (a crash in between leaves files
    # no row names, which the next purge of any campaign does not see: harmless, and rare).
    if files is not None:
        for sha in sorted(removable):
            await files.delete_async(sha)
    await checkpoint(db)
    log.info("purged campaign %s: %s", campaign, plan.summary())
    return plan


def _personal(participant: Participant) -> bool:
    return bool(
        participant.name or participant.phone or participant.email or participant.consent_text
    )


async def _used_elsewhere(
    session: AsyncSession, hashes: set[str], leaving: list[int]
) -> set[str]:
    """Of `hashes`, those an evidence item outside the submissions `leaving` still uses."""
    used: set[str] = set()
    ordered = sorted(hashes)
    for start in range(0, len(ordered), CHUNK):
        batch = ordered[start : start + CHUNK]
        query = select(EvidenceItem.sha256).where(EvidenceItem.sha256.in_(batch))
        if leaving:
            query = query.where(EvidenceItem.submission_id.not_in(leaving))
        used |= {sha for sha in await session.scalars(query.distinct()) if sha}
    return used


async def _reported_entries(session: AsyncSession, campaign: str, *, blank: bool) -> int:
    """Entries reported for the campaign (`action: report`); with `blank`, their fields lose
    everything but keyed citizen-ID hashes (the counting rules match citizens by them)."""
    rows = (
        await session.execute(
            select(ReportedEntry.id, ReportedEntry.fields).where(
                ReportedEntry.campaign == campaign
            )
        )
    ).all()
    if blank:
        for entry_id, fields in rows:
            kept = {
                name: value
                for name, value in (fields or {}).items()
                if isinstance(value, str) and value.startswith(CITIZEN_ID_HASH)
            }
            if kept != (fields or {}):
                await session.execute(
                    update(ReportedEntry).where(ReportedEntry.id == entry_id).values(fields=kept)
                )
    return len(rows)


async def checkpoint(db: Database) -> None:
    """SQLite: copy the write-ahead log into the database and empty it, so what was just
    deleted is gone from both files (secure_delete zeroed it in the pages). A no-op on
    PostgreSQL (its own VACUUM reclaims dead rows)."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        return
    await asyncio.to_thread(sqlite_checkpoint, Path(url.database))


def sqlite_checkpoint(path: Path, busy_ms: int = 5000) -> bool:
    """`PRAGMA wal_checkpoint(TRUNCATE)` on its own connection; False if a reader kept it
    from finishing (it is tried again next time)."""
    con = sqlite3.connect(str(path), timeout=busy_ms / 1000)
    try:
        row = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        con.close()
    return bool(row) and row[0] == 0


# -- the command ---------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    from bots.records.db import open_database
    from bots.runtime import FlowsInvalid, load_flows
    from bots.settings import SettingsError, load

    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    try:
        flows = load_flows(settings.config)
    except FlowsInvalid as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        print("Kịch bản chưa hợp lệ nên không xác định được thời hạn lưu trữ.", file=sys.stderr)
        return 1
    compiled = flows.compiled

    async def run() -> PurgePlan:
        db = await open_database(settings.database_url)
        try:
            return await purge(
                db,
                FileStore(settings.files_dir),
                args.campaign,
                compiled.campaigns,
                unit_field_names=unit_fields(compiled.field_kinds),
                force=bool(args.force),
                dry_run=bool(args.dry_run),
            )
        finally:
            await db.close()

    try:
        plan = asyncio.run(run())
    except PurgeRefused as error:
        print(f"Không xóa: {error}.", file=sys.stderr)
        return 1
    print(_report(plan))
    return 0


def _report(plan: PurgePlan) -> str:
    head = "Chạy thử (chưa xóa gì)" if plan.dry_run else "Đã xóa"
    lines = [
        f"{head} — chiến dịch {plan.campaign}: {plan.retention.describe()}"
        + (" [--force]" if plan.forced else ""),
        f"  bài nộp giữ lại để thống kê: {plan.submissions}",
        f"  minh chứng xóa: {plan.evidence_items}; tệp xóa: {plan.files_deleted}"
        f" (giữ {plan.files_shared} tệp còn dùng ở minh chứng khác)",
        f"  người tham gia: {plan.participants}; xóa thông tin cá nhân: {len(plan.erased)}; "
        f"giữ vì còn trong chiến dịch khác chưa hết hạn: {len(plan.kept)}; "
        f"đã xóa từ trước: {plan.already}",
    ]
    if plan.entries:
        lines.append(f"  mục báo cáo (action: report) xóa thông tin: {plan.entries}")
    return "\n".join(lines)


__all__ = [
    "PURGED_TEXT",
    "PurgePlan",
    "PurgeRefused",
    "Retention",
    "checkpoint",
    "main",
    "purge",
    "retention_of",
    "sqlite_checkpoint",
    "unit_fields",
]
