"""Record events: what the engine asks the application to store, as values.

The engine is pure; it never writes records itself. The pipeline commits these events to the
records database (idempotently, keyed by the inbound message and the event's position) before
it stores the new session.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from flows.vocab import Attachment

# A citizen-ID number (cccd) as Loa keeps it: a keyed hash, never the digits (DESIGN.md,
# "Personal data"). HMAC rather than a plain hash: 12 digits with a known province prefix are
# few enough to enumerate, so without the secret key a hash would give the number back.
CITIZEN_ID_HASH = "hmac-sha256:"


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
class EntryReported:
    """`action: report`: an entry recorded from the run's answers — for instance a cadre
    reporting one citizen they guided (name, citizen ID, category, VNeID level, ...).

    `fields` are the run's answers as (field, value), in the order asked. The fields named in
    `protected` are citizen-ID numbers: `citizen_id_hash` values when the engine holds the key,
    otherwise the digits, which the writer hashes before anything is stored."""

    kind: str  # the step's `report:` name, e.g. "cong_dan"
    flow: str
    fields: tuple[tuple[str, str], ...]
    protected: tuple[str, ...] = ()
    campaign: str | None = None
    wave: str | None = None  # the open wave's name when the campaign has waves
    ref: str | None = None  # the referral code the reporter entered with


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
class CertificateRequested:
    """The person confirmed the name to print on the certificate of an approved submission
    (SYSTEM "approve" → name confirmation): the application draws and sends it, once per
    submission whatever replays."""

    campaign: str
    name: str  # exactly as it will be printed
    submission: str | None = None  # the approved submission's id, as the approve event gave it


@dataclass(frozen=True, slots=True)
class DataDeletionRequested:
    """The person confirmed "xóa dữ liệu của tôi": delete their personal data."""


RecordEvent = (
    FieldSaved
    | ConsentRecorded
    | EvidenceSaved
    | SubmissionSubmitted
    | ReferralRecorded
    | EntryReported
    | Tagged
    | OrganisersNotified
    | HandoverRequested
    | FlowFinished
    | CertificateRequested
    | DataDeletionRequested
)


def citizen_id_hash(key: bytes, value: str) -> str:
    """The keyed hash of a citizen-ID number (its digits only, so "0791 2345 6789" and
    "079123456789" agree), prefixed with `CITIZEN_ID_HASH`. An already hashed value is returned
    as it is."""
    if value.startswith(CITIZEN_ID_HASH):
        return value
    digits = "".join(ch for ch in value if ch.isascii() and ch.isdigit())
    return CITIZEN_ID_HASH + hmac.new(key, digits.encode("ascii"), hashlib.sha256).hexdigest()
