"""The review queue and decisions on evidence.

A submitted campaign entry holds one evidence item per criterion (earlier answers to the same
criterion stay as history). An organiser accepts or rejects each current item:

- Rejecting an item records the reason and tells the person, in their own channel, which item
  and why; the engine takes them back to that evidence step ("reject" SYSTEM event). The
  submission returns to draft, so what they send again joins the same submission, which the
  bot submits again: it is back in the queue with the new item pending.
- When every current item is accepted the submission is approved and the person is told
  ("approve" SYSTEM event; certificates build on that).

Decisions are rows (`reviews`) written with their audit rows in one transaction. The events
they cause are sent afterwards by `dispatch_reviews`, right away and again from the periodic
task until delivered into the conversation's inbox (the inbox drops a repeat by message id,
`review:<id>`). The engine can send a person back to one evidence step at a time, so a second
rejection of the same submission waits until the person has answered the first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bots.console import audit
from bots.console.access import Access, scope_of_roots, unit_of
from bots.console.tree import OrgTree
from bots.console.windows import closes_at
from bots.records.db import Database
from bots.records.models import (
    ChannelIdentity,
    EvidenceItem,
    EvidenceStatus,
    Handover,
    Organiser,
    Participant,
    Review,
    ReviewDecision,
    Submission,
    SubmissionStatus,
)
from flows.compiler import CompiledBundle
from flows.vocab import Channel, Inbound, InboundKind

log = logging.getLogger("loa.console.review")

Notify = Callable[[Inbound], Awaitable[Any]]

SYSTEM_REJECT = "reject"
SYSTEM_APPROVE = "approve"
MAX_REASON = 500


# -- criteria as organisers and participants read them ------------------------------------------


@dataclass(frozen=True, slots=True)
class Criterion:
    key: str
    order: int  # position of its evidence step in the campaign's flow
    label: str  # for organisers: the step's question, shortened
    item: str  # for the participant's message: "Bước 1/4", or the question's first words
    prompt: str  # the whole question


_STEP_PREFIX = re.compile(r"^\s*(Bước\s*\d+\s*/\s*\d+)\s*[:.–—-]?\s*(.*)$", re.S | re.I)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",.;:–- ") + "…"


def criterion_of(bundle: CompiledBundle, campaign: str, key: str) -> Criterion:
    found = bundle.evidence_step(key, campaign)
    if found is None or found[1].text is None:
        pretty = key.replace("_", " ")
        return Criterion(key, 10_000, pretty, pretty, pretty)
    step = found[1]
    template = step.text
    assert template is not None
    prompt = template.render(lambda name: "{" + name + "}")
    match = _STEP_PREFIX.match(prompt)
    if match:
        item = match.group(1)
        rest = match.group(2)
        first = re.split(r"(?<=[.?!])\s", rest, maxsplit=1)[0]
        label = f"{item}: {_shorten(first, 90)}"
    else:
        first = re.split(r"(?<=[.?!,:])\s", prompt, maxsplit=1)[0]
        item = _shorten(first, 48)
        label = _shorten(prompt, 100)
    return Criterion(key, step.index, label, item, prompt)


def campaign_title(bundle: CompiledBundle, campaign: str) -> str:
    found = bundle.campaigns.get(campaign)
    return found.title if found is not None else campaign


# -- the queue ----------------------------------------------------------------------------------

STATUSES: dict[str, str] = {
    "cho_duyet": "Chờ duyệt",
    "cho_gui_lai": "Chờ người tham gia gửi lại",
    "da_duyet": "Đã duyệt",
    "khong_dat": "Không đạt",
    "tat_ca": "Tất cả bài đã nộp",
}
AGES: dict[str, str] = {"": "Mọi thời gian", "1": "Chờ hơn 1 ngày", "3": "Chờ hơn 3 ngày",
                        "7": "Chờ hơn 7 ngày"}
SORTS: dict[str, str] = {
    "window": "Cửa sổ nhắn tin đóng sớm nhất",
    "oldest": "Nộp sớm nhất trước",
    "newest": "Nộp gần đây nhất trước",
}


@dataclass(frozen=True, slots=True)
class QueueFilter:
    campaign: str = ""
    wave: str = ""
    unit: str = ""
    status: str = "cho_duyet"
    age: str = ""
    sort: str = "window"
    page: int = 1

    @classmethod
    def parse(cls, query: Any) -> QueueFilter:
        def pick(name: str, allowed: dict[str, str] | None = None, default: str = "") -> str:
            value = str(query.get(name, default) or default).strip()[:100]
            if allowed is not None and value not in allowed:
                return default
            return value

        try:
            page = max(1, min(10_000, int(query.get("page", "1") or 1)))
        except ValueError:
            page = 1
        return cls(
            campaign=pick("campaign"),
            wave=pick("wave"),
            unit=pick("unit"),
            status=pick("status", STATUSES, "cho_duyet"),
            age=pick("age", AGES, ""),
            sort=pick("sort", SORTS, "window"),
            page=page,
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """The filter as query parameters (defaults left out), with `changes` applied."""
        values = {
            "campaign": self.campaign,
            "wave": self.wave,
            "unit": self.unit,
            "status": self.status,
            "age": self.age,
            "sort": self.sort,
            "page": str(self.page),
        }
        values.update({k: str(v) for k, v in changes.items()})
        defaults = {"status": "cho_duyet", "sort": "window", "page": "1"}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}


@dataclass(slots=True)
class QueueEntry:
    """One submission of the queue, with what the list shows."""

    submission_id: int
    submitted_at: datetime | None
    window: datetime | None  # when the earliest-closing messaging window closes (None: none)
    channel: Channel | None
    participant: Participant | None = None
    submission: Submission | None = None
    unit: str | None = None
    pending: int = 0
    accepted: int = 0
    rejected: int = 0
    paused: bool = False


def status_of(submission: Submission, pending: int) -> tuple[str, str]:
    """(CSS key, label) of a submission as organisers think of it."""
    if submission.status is SubmissionStatus.APPROVED:
        return "approved", "Đã duyệt"
    if submission.status is SubmissionStatus.REJECTED:
        return "rejected", "Không đạt"
    if submission.submitted_at is None:
        return "draft", "Đang làm dở"
    if pending:
        return "submitted", "Chờ duyệt"
    return "returned", "Chờ gửi lại"


async def pending_counts(session: AsyncSession, submission_ids: list[int]) -> dict[int, int]:
    if not submission_ids:
        return {}
    rows = (
        await session.execute(
            select(EvidenceItem.submission_id, func.count())
            .where(
                EvidenceItem.submission_id.in_(submission_ids),
                EvidenceItem.status == EvidenceStatus.PENDING,
            )
            .group_by(EvidenceItem.submission_id)
        )
    ).all()
    return {sid: int(count) for sid, count in rows}


def _pending_exists() -> ColumnElement[bool]:
    return exists().where(
        EvidenceItem.submission_id == Submission.id,
        EvidenceItem.status == EvidenceStatus.PENDING,
    )


def status_condition(status: str) -> ColumnElement[bool] | None:
    open_ = Submission.status.in_([SubmissionStatus.SUBMITTED, SubmissionStatus.DRAFT])
    if status == "cho_duyet":
        return and_(open_, _pending_exists())
    if status == "cho_gui_lai":
        return and_(open_, ~_pending_exists())
    if status == "da_duyet":
        return Submission.status == SubmissionStatus.APPROVED
    if status == "khong_dat":
        return Submission.status == SubmissionStatus.REJECTED
    return None


def _sort_key(entry: QueueEntry, sort: str, now: datetime) -> tuple[Any, ...]:
    submitted = entry.submitted_at or now
    if sort == "oldest":
        return (submitted, entry.submission_id)
    if sort == "newest":
        return (-submitted.timestamp(), -entry.submission_id)
    # Open windows first, closing soonest first; then channels without a window; then windows
    # already closed (the answer waits for the person's next message anyway).
    if entry.window is None:
        return (1, submitted.timestamp(), entry.submission_id)
    if entry.window > now:
        return (0, entry.window.timestamp(), entry.submission_id)
    return (2, submitted.timestamp(), entry.submission_id)


async def queue_order(
    session: AsyncSession,
    access: Access,
    tree: OrgTree,
    bundle: CompiledBundle,
    flt: QueueFilter,
    now: datetime,
) -> list[QueueEntry]:
    """Every submission matching the filter, in the filter's order (ids and sort keys only:
    the window sort needs each channel's own window, so it is done here, not in SQL)."""
    stmt = (
        select(
            Submission.id,
            Submission.submitted_at,
            ChannelIdentity.channel,
            ChannelIdentity.last_inbound_at,
        )
        .join(Participant, Participant.id == Submission.participant_id)
        .outerjoin(ChannelIdentity, ChannelIdentity.participant_id == Participant.id)
        .where(access.where(), Submission.submitted_at.is_not(None))
    )
    condition = status_condition(flt.status)
    if condition is not None:
        stmt = stmt.where(condition)
    if flt.campaign:
        stmt = stmt.where(Submission.campaign == flt.campaign)
        if flt.wave:
            stmt = stmt.where(Submission.wave == flt.wave)
    if flt.unit:
        stmt = stmt.where(scope_of_roots([flt.unit], tree, bundle.districts).clause(access.unit))
    if flt.age:
        stmt = stmt.where(Submission.submitted_at <= now - timedelta(days=int(flt.age)))
    entries: dict[int, QueueEntry] = {}
    for sid, submitted_at, channel, last_inbound in (await session.execute(stmt)).all():
        window = closes_at(channel, last_inbound) if channel is not None else None
        entry = entries.get(sid)
        if entry is None:
            entries[sid] = QueueEntry(sid, submitted_at, window, channel)
        elif window is not None and (entry.window is None or window < entry.window):
            entry.window, entry.channel = window, channel
    return sorted(entries.values(), key=lambda e: _sort_key(e, flt.sort, now))


async def fill_entries(
    session: AsyncSession, entries: Sequence[QueueEntry], bundle: CompiledBundle
) -> None:
    """Load what the list shows for a page of entries."""
    if not entries:
        return
    ids = [e.submission_id for e in entries]
    rows = (
        await session.execute(
            select(Submission, Participant)
            .join(Participant, Participant.id == Submission.participant_id)
            .where(Submission.id.in_(ids))
        )
    ).all()
    by_id = {row[0].id: row for row in rows}
    items = (
        await session.execute(
            select(EvidenceItem.submission_id, EvidenceItem.criterion, EvidenceItem.status)
            .where(
                EvidenceItem.submission_id.in_(ids),
                EvidenceItem.status != EvidenceStatus.REPLACED,
            )
            .order_by(EvidenceItem.id)
        )
    ).all()
    current: dict[tuple[int, str], EvidenceStatus] = {}
    for sid, criterion, status in items:
        current[(sid, criterion)] = status  # the newest item of a criterion wins
    paused = set(
        (
            await session.scalars(
                select(ChannelIdentity.participant_id).where(
                    ChannelIdentity.participant_id.in_([row[1].id for row in rows]),
                    ChannelIdentity.paused.is_(True),
                )
            )
        ).all()
    )
    for entry in entries:
        row = by_id.get(entry.submission_id)
        if row is None:
            continue
        entry.submission, entry.participant = row[0], row[1]
        entry.unit = unit_of(row[1].profile or {}, bundle)
        entry.paused = row[1].id in paused
        for (sid, _), status in current.items():
            if sid != entry.submission_id:
                continue
            if status is EvidenceStatus.PENDING:
                entry.pending += 1
            elif status is EvidenceStatus.ACCEPTED:
                entry.accepted += 1
            elif status is EvidenceStatus.REJECTED:
                entry.rejected += 1


# -- one submission -----------------------------------------------------------------------------


@dataclass(slots=True)
class ItemHistory:
    item: EvidenceItem
    reviews: list[Review] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        for review in reversed(self.reviews):
            if review.decision is ReviewDecision.REJECT:
                return review.reason
        return None

    @property
    def last_review(self) -> Review | None:
        return self.reviews[-1] if self.reviews else None


@dataclass(slots=True)
class CriterionView:
    criterion: Criterion
    current: ItemHistory
    earlier: list[ItemHistory]

    @property
    def decidable(self) -> bool:
        return self.current.item.status in (EvidenceStatus.PENDING, EvidenceStatus.ACCEPTED)


@dataclass(slots=True)
class SubmissionView:
    submission: Submission
    participant: Participant
    identities: list[ChannelIdentity]
    criteria: list[CriterionView]
    unit: str | None
    reviewers: dict[int, str]
    open_handovers: list[Handover]

    @property
    def pending(self) -> int:
        return sum(1 for c in self.criteria if c.current.item.status is EvidenceStatus.PENDING)

    @property
    def reviewable(self) -> bool:
        return self.submission.submitted_at is not None and self.submission.status in (
            SubmissionStatus.SUBMITTED,
            SubmissionStatus.DRAFT,
        )

    def window(self) -> tuple[datetime | None, Channel | None]:
        best: tuple[datetime | None, Channel | None] = (None, None)
        for identity in self.identities:
            closes = closes_at(identity.channel, identity.last_inbound_at)
            if closes is not None and (best[0] is None or closes < best[0]):
                best = (closes, identity.channel)
        if best[0] is None and self.identities:
            return None, self.identities[0].channel
        return best


def group_items(
    items: Sequence[EvidenceItem],
    reviews: Sequence[Review],
    bundle: CompiledBundle,
    campaign: str,
) -> list[CriterionView]:
    by_item: dict[int, list[Review]] = {}
    for review in reviews:
        if review.evidence_id is not None:
            by_item.setdefault(review.evidence_id, []).append(review)
    grouped: dict[str, list[EvidenceItem]] = {}
    for item in sorted(items, key=lambda i: i.id):
        grouped.setdefault(item.criterion, []).append(item)
    views: list[CriterionView] = []
    for key, rows in grouped.items():
        live = [i for i in rows if i.status is not EvidenceStatus.REPLACED]
        current = (live or rows)[-1]
        earlier = [i for i in rows if i.id != current.id]
        views.append(
            CriterionView(
                criterion_of(bundle, campaign, key),
                ItemHistory(current, by_item.get(current.id, [])),
                [ItemHistory(i, by_item.get(i.id, [])) for i in reversed(earlier)],
            )
        )
    views.sort(key=lambda v: (v.criterion.order, v.current.item.id))
    return views


async def load_submission(
    session: AsyncSession, access: Access, submission_id: int, bundle: CompiledBundle
) -> SubmissionView | None:
    found = await access.submission(session, submission_id)
    if found is None:
        return None
    submission, participant = found
    items = (
        await session.scalars(
            select(EvidenceItem).where(EvidenceItem.submission_id == submission.id)
        )
    ).all()
    reviews = (
        await session.scalars(
            select(Review).where(Review.submission_id == submission.id).order_by(Review.id)
        )
    ).all()
    identities = (
        await session.scalars(
            select(ChannelIdentity)
            .where(ChannelIdentity.participant_id == participant.id)
            .order_by(ChannelIdentity.id)
        )
    ).all()
    organiser_ids = {r.organiser_id for r in reviews if r.organiser_id is not None}
    reviewers: dict[int, str] = {}
    if organiser_ids:
        for oid, name, login in (
            await session.execute(
                select(Organiser.id, Organiser.name, Organiser.login).where(
                    Organiser.id.in_(organiser_ids)
                )
            )
        ).all():
            reviewers[oid] = name or login
    handovers = (
        await session.scalars(
            select(Handover).where(
                Handover.identity_id.in_([i.id for i in identities]),
                Handover.released_at.is_(None),
            )
        )
    ).all() if identities else []
    return SubmissionView(
        submission=submission,
        participant=participant,
        identities=list(identities),
        criteria=group_items(items, reviews, bundle, submission.campaign),
        unit=unit_of(participant.profile or {}, bundle),
        reviewers=reviewers,
        open_handovers=list(handovers),
    )


# -- decisions ----------------------------------------------------------------------------------


class ReviewError(Exception):
    """A decision that cannot be taken; `str(error)` is for the organiser (Vietnamese)."""


@dataclass(frozen=True, slots=True)
class Decided:
    submission_id: int
    approved: bool  # this decision completed the submission


async def _current_items(session: AsyncSession, submission_id: int) -> dict[str, EvidenceItem]:
    rows = (
        await session.scalars(
            select(EvidenceItem)
            .where(
                EvidenceItem.submission_id == submission_id,
                EvidenceItem.status != EvidenceStatus.REPLACED,
            )
            .order_by(EvidenceItem.id)
        )
    ).all()
    current: dict[str, EvidenceItem] = {}
    for item in rows:
        current[item.criterion] = item
    return current


async def _approve_if_complete(
    session: AsyncSession,
    submission: Submission,
    organiser: Organiser,
    now: datetime,
    ip: str | None,
) -> bool:
    current = await _current_items(session, submission.id)
    if not current or any(i.status is not EvidenceStatus.ACCEPTED for i in current.values()):
        return False
    # Guarded update: of two organisers finishing the same submission at once, one approves.
    result = await session.execute(
        update(Submission)
        .where(
            Submission.id == submission.id,
            Submission.status.in_([SubmissionStatus.SUBMITTED, SubmissionStatus.DRAFT]),
        )
        .values(status=SubmissionStatus.APPROVED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 1) == 0:
        return False
    submission.status = SubmissionStatus.APPROVED
    session.add(
        Review(
            submission_id=submission.id,
            evidence_id=None,
            organiser_id=organiser.id,
            decision=ReviewDecision.APPROVE,
            created_at=now,
            notify=True,
        )
    )
    audit.record(
        session,
        organiser,
        audit.SUBMISSION_APPROVED,
        now,
        participant_id=submission.participant_id,
        ip=ip,
        submission=submission.id,
        campaign=submission.campaign,
    )
    return True


def _check_open(submission: Submission) -> None:
    if submission.status is SubmissionStatus.APPROVED:
        raise ReviewError("Bài này đã được duyệt, không sửa được quyết định nữa.")
    if submission.status is SubmissionStatus.REJECTED:
        raise ReviewError("Bài này đã bị đánh giá không đạt.")
    if submission.submitted_at is None:
        raise ReviewError("Người tham gia chưa nộp bài này.")


async def decide(
    session: AsyncSession,
    access: Access,
    organiser: Organiser,
    evidence_id: int,
    decision: ReviewDecision,
    reason: str,
    now: datetime,
    *,
    ip: str | None = None,
) -> Decided | None:
    """Accept or reject one evidence item (inside the caller's transaction). None: no such
    item for this organiser. `ReviewError` when it cannot be decided now."""
    found = await access.evidence(session, evidence_id)
    if found is None:
        return None
    item, submission, participant = found
    _check_open(submission)
    current = (await _current_items(session, submission.id)).get(item.criterion)
    if current is None or current.id != item.id:
        raise ReviewError("Người tham gia đã gửi bản mới cho mục này; hãy xét bản mới.")
    reason = " ".join(reason.split())[:MAX_REASON]
    if decision is ReviewDecision.ACCEPT:
        if item.status is not EvidenceStatus.PENDING:
            raise ReviewError("Mục này đã được xét rồi.")
        item.status = EvidenceStatus.ACCEPTED
        action = audit.EVIDENCE_ACCEPTED
    elif decision is ReviewDecision.REJECT:
        if not reason:
            raise ReviewError("Hãy ghi lý do trả lại để người tham gia biết cần sửa gì.")
        if item.status not in (EvidenceStatus.PENDING, EvidenceStatus.ACCEPTED):
            raise ReviewError("Mục này đã được trả lại rồi.")
        item.status = EvidenceStatus.REJECTED
        action = audit.EVIDENCE_REJECTED
    else:
        raise ReviewError("Quyết định không hợp lệ.")
    session.add(
        Review(
            submission_id=submission.id,
            evidence_id=item.id,
            organiser_id=organiser.id,
            decision=decision,
            reason=reason or None,
            created_at=now,
            notify=decision is ReviewDecision.REJECT,
        )
    )
    audit.record(
        session,
        organiser,
        action,
        now,
        participant_id=participant.id,
        ip=ip,
        submission=submission.id,
        evidence=item.id,
        criterion=item.criterion,
    )
    submission.updated_at = now
    approved = False
    if decision is ReviewDecision.ACCEPT:
        await session.flush()
        approved = await _approve_if_complete(session, submission, organiser, now, ip)
    return Decided(submission.id, approved)


async def accept_all(
    session: AsyncSession,
    access: Access,
    organiser: Organiser,
    submission_id: int,
    now: datetime,
    *,
    ip: str | None = None,
) -> Decided | None:
    """Accept every pending current item; the submission is approved if nothing else is left."""
    found = await access.submission(session, submission_id)
    if found is None:
        return None
    submission, participant = found
    _check_open(submission)
    current = await _current_items(session, submission.id)
    pending = [i for i in current.values() if i.status is EvidenceStatus.PENDING]
    if not pending:
        raise ReviewError("Không còn mục nào chờ duyệt.")
    for item in pending:
        item.status = EvidenceStatus.ACCEPTED
        session.add(
            Review(
                submission_id=submission.id,
                evidence_id=item.id,
                organiser_id=organiser.id,
                decision=ReviewDecision.ACCEPT,
                created_at=now,
                notify=False,
            )
        )
        audit.record(
            session,
            organiser,
            audit.EVIDENCE_ACCEPTED,
            now,
            participant_id=participant.id,
            ip=ip,
            submission=submission.id,
            evidence=item.id,
            criterion=item.criterion,
        )
    submission.updated_at = now
    await session.flush()
    approved = await _approve_if_complete(session, submission, organiser, now, ip)
    return Decided(submission.id, approved)


# -- telling participants -----------------------------------------------------------------------


async def _identity_of(session: AsyncSession, participant_id: int) -> ChannelIdentity | None:
    """The channel the person wrote on last (in practice a participant has one)."""
    rows = (
        await session.scalars(
            select(ChannelIdentity).where(ChannelIdentity.participant_id == participant_id)
        )
    ).all()
    if not rows:
        return None
    return max(rows, key=lambda i: (i.last_inbound_at is not None, i.last_inbound_at, i.id))


def system_inbound(
    identity: ChannelIdentity,
    name: str,
    message_id: str,
    now: datetime,
    data: tuple[tuple[str, str], ...] = (),
) -> Inbound:
    return Inbound(
        district=identity.district,
        channel=identity.channel,
        user_id=identity.user_id,
        kind=InboundKind.SYSTEM,
        message_id=message_id,
        timestamp=now,
        payload=name,
        data=data,
    )


async def _outstanding_rejection(
    session: AsyncSession, submission_id: int, other_than: int
) -> bool:
    """Was the person already sent back for an item of this submission that they have not
    answered yet? (The engine holds one such question at a time.)"""
    sent = (
        await session.execute(
            select(Review.id, EvidenceItem.id, EvidenceItem.criterion)
            .join(EvidenceItem, EvidenceItem.id == Review.evidence_id)
            .where(
                Review.submission_id == submission_id,
                Review.decision == ReviewDecision.REJECT,
                Review.notified_at.is_not(None),
                Review.id != other_than,
            )
        )
    ).all()
    for _, item_id, criterion in sent:
        newer = await session.scalar(
            select(EvidenceItem.id)
            .where(
                EvidenceItem.submission_id == submission_id,
                EvidenceItem.criterion == criterion,
                EvidenceItem.id > item_id,
            )
            .limit(1)
        )
        if newer is None:
            return True
    return False


async def _prepare(
    session: AsyncSession, review: Review, bundle: CompiledBundle | None, now: datetime
) -> Inbound | bool | None:
    """The event a review sends now; False: not yet (wait); None: nothing to send (mark it
    done). Runs inside a write transaction; may return the submission to draft."""
    submission = await session.get(Submission, review.submission_id)
    if submission is None:
        return None
    identity = await _identity_of(session, submission.participant_id)
    if identity is None:
        return None
    if review.decision is ReviewDecision.APPROVE:
        approved = (("campaign", submission.campaign), ("submission", str(submission.id)))
        return system_inbound(identity, SYSTEM_APPROVE, f"review:{review.id}", now, approved)
    if review.decision is not ReviewDecision.REJECT or review.evidence_id is None:
        return None
    item = await session.get(EvidenceItem, review.evidence_id)
    if item is None or item.status is not EvidenceStatus.REJECTED:
        return None
    newer = await session.scalar(
        select(EvidenceItem.id)
        .where(
            EvidenceItem.submission_id == submission.id,
            EvidenceItem.criterion == item.criterion,
            EvidenceItem.id > item.id,
        )
        .limit(1)
    )
    if newer is not None:  # they already sent it again: nothing to ask for
        return None
    if await _outstanding_rejection(session, submission.id, review.id):
        return False
    if submission.status is SubmissionStatus.SUBMITTED:
        # What they send again must join this submission (the writer adds evidence to the
        # participant's draft of the campaign and submits that).
        submission.status = SubmissionStatus.DRAFT
        submission.updated_at = now
    label = (
        criterion_of(bundle, submission.campaign, item.criterion).item
        if bundle is not None
        else item.criterion
    )
    data = (
        ("criterion", item.criterion),
        ("reason", review.reason or ""),
        ("campaign", submission.campaign),
        ("item", label),
    )
    return system_inbound(identity, SYSTEM_REJECT, f"review:{review.id}", now, data)


async def dispatch_reviews(
    db: Database,
    notify: Notify,
    now: datetime,
    *,
    bundle: CompiledBundle | None = None,
    submission_id: int | None = None,
    limit: int = 200,
) -> int:
    """Send the SYSTEM events of decisions not yet sent (all, or one submission's); returns
    how many went into inboxes. A failure leaves the rest for the next call."""
    stmt = (
        select(Review.id)
        .where(Review.notify.is_(True), Review.notified_at.is_(None))
        .order_by(Review.id)
        .limit(limit)
    )
    if submission_id is not None:
        stmt = stmt.where(Review.submission_id == submission_id)
    async with db.reads() as session:
        ids = list((await session.scalars(stmt)).all())
    sent = 0
    for review_id in ids:
        async with db.sessions() as session, session.begin():
            review = await session.get(Review, review_id)
            if review is None or review.notified_at is not None:
                continue
            inbound = await _prepare(session, review, bundle, now)
            if inbound is False:
                continue
            if inbound is None:
                review.notified_at = now
                continue
            assert isinstance(inbound, Inbound)
        # Outside the transaction: never hold a write lock while the inbox is written.
        try:
            await notify(inbound)
        except Exception:
            log.exception("review %d: could not reach the conversation; will retry", review_id)
            break
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(Review).where(Review.id == review_id).values(notified_at=now)
            )
        sent += 1
    return sent


__all__ = [
    "AGES",
    "SORTS",
    "STATUSES",
    "Criterion",
    "CriterionView",
    "Decided",
    "QueueEntry",
    "QueueFilter",
    "ReviewError",
    "SubmissionView",
    "accept_all",
    "campaign_title",
    "criterion_of",
    "decide",
    "dispatch_reviews",
    "fill_entries",
    "load_submission",
    "pending_counts",
    "queue_order",
    "status_condition",
    "status_of",
    "system_inbound",
]
