"""Record events: what the engine asks the application to store, as values.

The engine is pure; it never writes records itself. The pipeline commits these events to the
records database (idempotently, keyed by the inbound message and the event's position) before
it stores the new session.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.vocab import Attachment


@dataclass(frozen=True, slots=True)
class FieldSaved:
    """A profile field the person answered (ho_ten, email, so_dien_thoai, don_vi, ...)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ConsentRecorded:
    """The answer to the personal-data consent question (Decree 13/2023/NĐ-CP)."""

    given: bool
    text: str  # the question exactly as it was asked


@dataclass(frozen=True, slots=True)
class EvidenceSaved:
    campaign: str
    criterion: str  # the evidence step's key
    text: str | None = None
    attachment: Attachment | None = None


@dataclass(frozen=True, slots=True)
class SubmissionSubmitted:
    campaign: str
    wave: str | None  # the wave's name when the campaign has waves


@dataclass(frozen=True, slots=True)
class ReferralRecorded:
    code: str  # the cadre referral code carried by the entry link
    flow: str


@dataclass(frozen=True, slots=True)
class Tagged:
    tag: str


@dataclass(frozen=True, slots=True)
class OrganisersNotified:
    text: str


@dataclass(frozen=True, slots=True)
class HandoverRequested:
    reason: str


@dataclass(frozen=True, slots=True)
class FlowFinished:
    flow: str


@dataclass(frozen=True, slots=True)
class DataDeletionRequested:
    """The person confirmed "xóa dữ liệu của tôi": delete their personal data."""


RecordEvent = (
    FieldSaved
    | ConsentRecorded
    | EvidenceSaved
    | SubmissionSubmitted
    | ReferralRecorded
    | Tagged
    | OrganisersNotified
    | HandoverRequested
    | FlowFinished
    | DataDeletionRequested
)
