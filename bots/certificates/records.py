"""What the records writer does with certificates (database only, no drawing).

`request_certificate` turns the engine's `CertificateRequested` into a `certificates` row inside
the writer's transaction for the inbound message: one row per approved submission, so a
replayed or repeated request never issues twice. Drawing, numbering and delivery happen after
the commit, off the conversation's lock (bots.certificates.issue).

`erase_certificates` is part of deleting a person's data ("xóa dữ liệu của tôi"): the printed
name goes, the certificate shows as revoked on the verify page, and the issuer's sweep deletes
its files.
"""

from __future__ import annotations

import logging
import unicodedata
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bots.records.models import (
    AuditEntry,
    Certificate,
    CertificateStatus,
    ChannelIdentity,
    Participant,
    Submission,
    SubmissionStatus,
)
from flows.events import CertificateRequested

log = logging.getLogger("loa.certificates")

ERASED = "personal_data_deleted"  # revoked_reason when the person's data was deleted


def clean_name(text: str) -> str:
    """NFC with single spaces (the engine already did this; names also come from elsewhere)."""
    return " ".join(unicodedata.normalize("NFC", text).split())[:255]


async def approved_submission(
    session: AsyncSession, participant: Participant, campaign: str, submission: str | None
) -> Submission | None:
    """The approved submission a request is for: the one the approval named, else the
    person's latest approved submission of the campaign."""
    if submission and submission.isdigit() and len(submission) < 18:
        found = await session.get(Submission, int(submission))
        if (
            found is not None
            and found.participant_id == participant.id
            and found.campaign == campaign
            and found.status is SubmissionStatus.APPROVED
        ):
            return found
    found = await session.scalar(
        select(Submission)
        .where(
            Submission.participant_id == participant.id,
            Submission.campaign == campaign,
            Submission.status == SubmissionStatus.APPROVED,
        )
        .order_by(Submission.id.desc())
        .limit(1)
    )
    return found


async def request_certificate(
    session: AsyncSession,
    identity: ChannelIdentity,
    participant: Participant,
    event: CertificateRequested,
    now: datetime,
) -> Certificate | None:
    """Record the request (inside the caller's transaction); the existing certificate when the
    submission has one already; None when nothing approved matches (logged, nothing stored)."""
    submission = await approved_submission(session, participant, event.campaign, event.submission)
    if submission is None:
        log.warning(
            "participant %d asked for a certificate of %s without an approved submission",
            participant.id, event.campaign,
        )
        return None
    existing = await session.scalar(
        select(Certificate).where(Certificate.submission_id == submission.id)
    )
    if existing is not None:
        return existing
    certificate = Certificate(
        participant_id=participant.id,
        submission_id=submission.id,
        identity_id=identity.id,
        district=participant.district,
        campaign=submission.campaign,
        name=clean_name(event.name),
        status=CertificateStatus.REQUESTED,
        requested_at=now,
        attempts=0,
        email_attempts=0,
    )
    session.add(certificate)
    await session.flush()
    session.add(
        AuditEntry(
            at=now, actor="bot", action="certificate_requested", participant_id=participant.id,
            detail={"certificate": certificate.id, "submission": submission.id},
        )
    )
    return certificate


async def erase_certificates(session: AsyncSession, participant_id: int, now: datetime) -> int:
    """Withdraw a person's certificates as their data is deleted (inside the caller's
    transaction): no name or unit left, revoked; the files go in the issuer's next sweep."""
    result = await session.execute(
        update(Certificate)
        .where(Certificate.participant_id == participant_id)
        .values(
            name="",
            unit=None,
            status=CertificateStatus.REVOKED,
            revoked_at=now,
            revoked_reason=ERASED,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


__all__ = ["ERASED", "approved_submission", "clean_name", "erase_certificates",
           "request_certificate"]
