"""Possible duplicates of a submission, each with its reason.

Strong signs, found by indexed equality in SQL:
- the same file (SHA-256 of the bytes) in another person's evidence;
- the same platform file id (Telegram's `file_unique_id`: the same upload forwarded);
- the same decoded QR payload (one app account or bank account shown by two people);
- the same phone number or email in two registrations.
A weak hint: a perceptually similar image (perceptual hashes at most 6 bits apart), found by
comparing the hashes of the campaign's other images (one small query, compared here).

Only what the organiser may see is looked at, so a link never leads to a 404 and nothing
about another subtree is revealed. Evidence of the same person (an earlier answer, another
campaign) is not a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bots.console.access import Access
from bots.records.models import EvidenceItem, EvidenceKind, Participant, Submission

NEAR_BITS = 6
LIMIT = 20  # matches per reason shown

REASONS = {
    "sha256": "cùng một tệp ảnh",
    "platform_id": "cùng mã tệp trên nền tảng (ảnh được chuyển tiếp)",
    "qr": "cùng nội dung mã QR",
    "phone": "cùng số điện thoại",
    "email": "cùng email",
    "phash": "ảnh gần giống (chỉ là gợi ý)",
}


@dataclass(frozen=True, slots=True)
class Duplicate:
    reason: str  # a key of REASONS
    evidence_id: int | None  # the item of this submission it concerns (None: registration)
    other_participant_id: int
    other_name: str | None
    other_submission_id: int | None
    other_evidence_id: int | None = None
    distance: int | None = None  # perceptual hash distance, for "phash"

    @property
    def strong(self) -> bool:
        return self.reason != "phash"

    @property
    def label(self) -> str:
        return REASONS[self.reason]


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Every reason one other person's entry looks like this one (for the page)."""

    other_participant_id: int
    other_name: str | None
    other_submission_id: int | None
    reasons: tuple[str, ...]  # keys of REASONS, strong ones first

    @property
    def strong(self) -> bool:
        return any(r != "phash" for r in self.reasons)

    @property
    def labels(self) -> list[str]:
        return [REASONS[r] for r in self.reasons]


def grouped(found: list[Duplicate]) -> list[DuplicateGroup]:
    """One line per other person and submission, strong matches first."""
    order = list(REASONS)
    groups: dict[tuple[int, int | None], list[Duplicate]] = {}
    for d in found:
        groups.setdefault((d.other_participant_id, d.other_submission_id), []).append(d)
    out = []
    for (pid, sid), rows in groups.items():
        reasons = sorted({d.reason for d in rows}, key=order.index)
        out.append(DuplicateGroup(pid, rows[0].other_name, sid, tuple(reasons)))
    out.sort(key=lambda g: (not g.strong, -len(g.reasons), g.other_participant_id))
    return out


async def _same_value(
    session: AsyncSession,
    access: Access,
    column: InstrumentedAttribute[str | None],
    reason: str,
    mine: dict[str, int],
    participant_id: int,
) -> list[Duplicate]:
    """Other people's evidence whose `column` equals one of `mine` (value → my item id)."""
    if not mine:
        return []
    rows = (
        await session.execute(
            select(
                column,
                EvidenceItem.id,
                EvidenceItem.submission_id,
                Participant.id,
                Participant.name,
            )
            .join(Submission, Submission.id == EvidenceItem.submission_id)
            .join(Participant, Participant.id == Submission.participant_id)
            .where(
                column.in_(sorted(mine)),
                Participant.id != participant_id,
                access.where(),
            )
            .order_by(EvidenceItem.id.desc())
            .limit(LIMIT * 3)
        )
    ).all()
    out: list[Duplicate] = []
    seen: set[tuple[int, int]] = set()
    for value, item_id, submission_id, other_id, name in rows:
        if value is None or value not in mine:
            continue
        key = (mine[value], submission_id)
        if key in seen:
            continue
        seen.add(key)
        out.append(Duplicate(reason, mine[value], other_id, name, submission_id, item_id))
    return out[:LIMIT]


async def _same_contact(
    session: AsyncSession,
    access: Access,
    column: InstrumentedAttribute[str | None],
    reason: str,
    value: str | None,
    participant: Participant,
    campaign: str,
) -> list[Duplicate]:
    if not value:
        return []
    condition: ColumnElement[bool] = column == value
    others = (
        await session.execute(
            select(Participant.id, Participant.name)
            .where(
                condition,
                Participant.id != participant.id,
                Participant.deleted_at.is_(None),
                access.where(),
            )
            .order_by(Participant.id)
            .limit(LIMIT)
        )
    ).all()
    out: list[Duplicate] = []
    for other_id, name in others:
        submission_id = await session.scalar(
            select(Submission.id)
            .where(Submission.participant_id == other_id, Submission.campaign == campaign)
            .order_by(Submission.id.desc())
            .limit(1)
        )
        out.append(Duplicate(reason, None, other_id, name, submission_id))
    return out


def hamming(a: str, b: str) -> int | None:
    try:
        return (int(a, 16) ^ int(b, 16)).bit_count()
    except ValueError:
        return None


async def _near_images(
    session: AsyncSession,
    access: Access,
    mine: dict[str, int],
    participant_id: int,
    campaign: str,
    exact: set[int],
) -> list[Duplicate]:
    if not mine:
        return []
    rows = (
        await session.execute(
            select(
                EvidenceItem.perceptual_hash,
                EvidenceItem.id,
                EvidenceItem.submission_id,
                Participant.id,
                Participant.name,
            )
            .join(Submission, Submission.id == EvidenceItem.submission_id)
            .join(Participant, Participant.id == Submission.participant_id)
            .where(
                EvidenceItem.kind == EvidenceKind.IMAGE,
                EvidenceItem.perceptual_hash.is_not(None),
                Submission.campaign == campaign,
                Participant.id != participant_id,
                access.where(),
            )
        )
    ).all()
    found: list[Duplicate] = []
    for phash, item_id, submission_id, other_id, name in rows:
        if item_id in exact or phash is None:
            continue
        for my_hash, my_item in mine.items():
            distance = hamming(my_hash, phash)
            if distance is not None and distance <= NEAR_BITS:
                found.append(
                    Duplicate("phash", my_item, other_id, name, submission_id, item_id, distance)
                )
                break
    found.sort(key=lambda d: (d.distance or 0, -(d.other_evidence_id or 0)))
    return found[:LIMIT]


async def find_duplicates(
    session: AsyncSession,
    access: Access,
    submission: Submission,
    participant: Participant,
) -> list[Duplicate]:
    """Every possible duplicate of this submission the organiser may see, strong ones first."""
    items = (
        await session.scalars(
            select(EvidenceItem).where(EvidenceItem.submission_id == submission.id)
        )
    ).all()
    by_sha = {i.sha256: i.id for i in items if i.sha256}
    by_platform = {i.platform_unique_id: i.id for i in items if i.platform_unique_id}
    by_qr = {i.qr_payload: i.id for i in items if i.qr_payload}
    by_phash = {i.perceptual_hash: i.id for i in items if i.perceptual_hash}
    out: list[Duplicate] = []
    out += await _same_value(session, access, EvidenceItem.sha256, "sha256", by_sha,
                             participant.id)
    out += await _same_value(session, access, EvidenceItem.platform_unique_id, "platform_id",
                             by_platform, participant.id)
    out += await _same_value(session, access, EvidenceItem.qr_payload, "qr", by_qr,
                             participant.id)
    out += await _same_contact(session, access, Participant.phone, "phone", participant.phone,
                               participant, submission.campaign)
    out += await _same_contact(session, access, Participant.email, "email", participant.email,
                               participant, submission.campaign)
    exact = {d.other_evidence_id for d in out if d.reason == "sha256" and d.other_evidence_id}
    out += await _near_images(session, access, by_phash, participant.id, submission.campaign,
                              exact)
    return out


async def flagged(
    session: AsyncSession, access: Access, submission_ids: list[int]
) -> dict[int, set[str]]:
    """For a page of the queue: which submissions have a strong duplicate, and why (one query
    per evidence reason, matching each item against other people's visible evidence)."""
    if not submission_ids:
        return {}
    out: dict[int, set[str]] = {}
    other = EvidenceItem.__table__.alias("other")
    other_submission = Submission.__table__.alias("other_submission")
    for reason, column in (
        ("sha256", "sha256"),
        ("platform_id", "platform_unique_id"),
        ("qr", "qr_payload"),
    ):
        mine_col = getattr(EvidenceItem, column)
        rows = (
            await session.execute(
                select(EvidenceItem.submission_id)
                .join(Submission, Submission.id == EvidenceItem.submission_id)
                .join(other, other.c[column] == mine_col)
                .join(other_submission, other_submission.c.id == other.c.submission_id)
                .join(Participant, Participant.id == other_submission.c.participant_id)
                .where(
                    EvidenceItem.submission_id.in_(submission_ids),
                    mine_col.is_not(None),
                    Participant.id != Submission.participant_id,
                    access.where(),
                )
                .distinct()
            )
        ).all()
        for (sid,) in rows:
            out.setdefault(sid, set()).add(reason)
    mine = Participant.__table__.alias("mine")
    for reason, contact in (("phone", Participant.phone), ("email", Participant.email)):
        rows = (
            await session.execute(
                select(Submission.id)
                .join(mine, mine.c.id == Submission.participant_id)
                .join(Participant, contact == mine.c[contact.key])
                .where(
                    Submission.id.in_(submission_ids),
                    mine.c[contact.key].is_not(None),
                    Participant.id != mine.c.id,
                    Participant.deleted_at.is_(None),
                    access.where(),
                )
                .distinct()
            )
        ).all()
        for (sid,) in rows:
            out.setdefault(sid, set()).add(reason)
    return out


__all__ = [
    "NEAR_BITS",
    "REASONS",
    "Duplicate",
    "DuplicateGroup",
    "find_duplicates",
    "flagged",
    "grouped",
    "hamming",
]
