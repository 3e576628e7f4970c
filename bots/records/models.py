"""The records: what must outlive a conversation (SQLAlchemy 2 typed models).

Portable between SQLite (the default) and PostgreSQL: plain column types only, enums stored as
short strings (`native_enum=False`), JSON through SQLAlchemy's generic `JSON`, and timestamps
always timezone-aware UTC in Python whatever the database keeps. Schema changes go through
Alembic (`bots/records/migrations/`); `tests/records` checks that the migrations and these
models agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from flows.vocab import Channel


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; SQLite keeps them as naive UTC text, PostgreSQL as
    `timestamptz`. A naive datetime is refused: it is always a bug upstream."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: records keep aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _enum(cls: type[enum.Enum], length: int = 32) -> Enum:
    """An enum stored as its `.value` in a VARCHAR (no native type, no CHECK): adding a
    member later needs no migration on either database."""
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class SubmissionStatus(enum.Enum):
    DRAFT = "draft"  # evidence is being collected
    SUBMITTED = "submitted"  # waiting for review
    APPROVED = "approved"
    REJECTED = "rejected"


class EvidenceKind(enum.Enum):
    TEXT = "text"
    IMAGE = "image"
    FILE = "file"


class EvidenceStatus(enum.Enum):
    PENDING = "pending"  # not reviewed yet
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REPLACED = "replaced"  # the person sent another answer for the same criterion


class NotificationKind(enum.Enum):
    NOTIFY = "notify"  # the flow asked to tell the organisers something
    HANDOVER = "handover"  # the person asked for a human; the bot is paused for them
    REAUTHORISE = "reauthorise"  # a channel's credentials died: an admin must authorise again
    UNDELIVERED = "undelivered"  # a bot message failed for good (bots/delivery.py)
    CHANNEL = "channel"  # a channel's health check found a problem (Page unsubscribed, ...)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}  # noqa: RUF012


class Organisation(Base):
    """A node of the organisation tree (province, district, unit, faculty, ...)."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    members: Mapped[int | None] = mapped_column(Integer)
    quota: Mapped[int | None] = mapped_column(Integer)  # an absolute number ...
    quota_percent: Mapped[int | None] = mapped_column(Integer)  # ... or a percent of members
    area: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Participant(Base):
    """One person as a district knows them; the profile holds every saved field."""

    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(primary_key=True)
    district: Mapped[str] = mapped_column(String(100), index=True)
    profile: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Copies of the profile fields organisers search by.
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    consent_given_at: Mapped[datetime | None]
    consent_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]  # personal data deleted on request at this time
    # Personal data removed when the retention period of the person's campaigns ran out
    # (`loa purge`, bots/ops/purge.py); unlike `deleted_at` the row still counts in reports.
    purged_at: Mapped[datetime | None]


class ChannelIdentity(Base):
    """A participant's account on one channel of one district."""

    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("district", "channel", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    district: Mapped[str] = mapped_column(String(100))
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    user_id: Mapped[str] = mapped_column(String(255))
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    last_inbound_at: Mapped[datetime | None]  # opens the platform's messaging window
    entry_ref: Mapped[str | None] = mapped_column(String(64))  # deep-link ref of the first visit
    referral_code: Mapped[str | None] = mapped_column(String(64), index=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)  # a human has taken over
    created_at: Mapped[datetime]


class Submission(Base):
    """A participant's entry in a campaign: evidence items, then review."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_campaign_status", "campaign", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    campaign: Mapped[str] = mapped_column(String(100))
    wave: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[SubmissionStatus] = mapped_column(
        _enum(SubmissionStatus), default=SubmissionStatus.DRAFT
    )
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]


class EvidenceItem(Base):
    """One answer to a campaign criterion: a text, or a stored file (by content hash)."""

    __tablename__ = "evidence_items"
    # Duplicate checks look QR payloads up by equality. A hash index on PostgreSQL: a payload
    # can exceed what a B-tree entry holds (about 2.7 kB), and equality is all it needs.
    __table_args__ = (
        Index("ix_evidence_items_qr_payload", "qr_payload", postgresql_using="hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    criterion: Mapped[str] = mapped_column(String(100))
    kind: Mapped[EvidenceKind] = mapped_column(_enum(EvidenceKind))
    text: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    file_path: Mapped[str | None] = mapped_column(String(255))  # relative to <data_dir>/files
    mime: Mapped[str | None] = mapped_column(String(127))
    size: Mapped[int | None] = mapped_column(BigInteger)
    platform_unique_id: Mapped[str | None] = mapped_column(String(255), index=True)
    qr_payload: Mapped[str | None] = mapped_column(Text)
    perceptual_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[EvidenceStatus] = mapped_column(
        _enum(EvidenceStatus), default=EvidenceStatus.PENDING
    )
    created_at: Mapped[datetime]


class ReferralCredit(Base):
    """A participant who entered through a cadre's referral code (Sốp Cộp counting rules)."""

    __tablename__ = "referral_credits"
    __table_args__ = (UniqueConstraint("code", "participant_id", "flow"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    flow: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("participant_id", "tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"))
    tag: Mapped[str] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime]


class OrganiserNotification(Base):
    """Something organisers should see: a flow's notice, or a request for a human."""

    __tablename__ = "organiser_notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    district: Mapped[str] = mapped_column(String(100), index=True)
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participants.id"), index=True)
    kind: Mapped[NotificationKind] = mapped_column(_enum(NotificationKind))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    handled_at: Mapped[datetime | None]


class ProcessedInbound(Base):
    """Inbound messages whose record events are written: a replay writes nothing twice."""

    __tablename__ = "processed_inbound"

    conversation: Mapped[str] = mapped_column(String(512), primary_key=True)
    inbound_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    processed_at: Mapped[datetime]


class AuditEntry(Base):
    """Who did what to whose data, and when (minimal; organiser actions add their own)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(255))  # "bot", "organiser:<id>", ...
    action: Mapped[str] = mapped_column(String(64))
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participants.id"), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ZaloTokenPair(Base):
    """A Zalo OA's current token pair and the lease under which one process refreshes it.

    The refresh token is single-use and rotates on every refresh, so the pair lives here,
    shared by every process, never in memory or the environment (bots/zalo_tokens.py)."""

    __tablename__ = "zalo_tokens"

    oa_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str] = mapped_column(Text)
    access_expires_at: Mapped[datetime]
    generation: Mapped[int] = mapped_column(Integer, default=1)  # pairs saved so far
    authorised_at: Mapped[datetime]  # the last first pair from an OA admin's consent
    rotated_at: Mapped[datetime]  # the current pair was saved at
    needs_reauthorisation: Mapped[bool] = mapped_column(Boolean, default=False)
    problem: Mapped[str | None] = mapped_column(Text)  # why, for the organiser (Vietnamese)
    # The refresh lease: a row-level single-flight lock that no transaction holds open.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None]


class ChannelCursor(Base):
    """A small durable value a channel keeps between runs and shares between processes: a
    Telegram long-poll offset, the open notice of a health-check problem (bots/channels)."""

    __tablename__ = "channel_cursors"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class SentMessage(Base):
    """A message id a platform gave back for something Loa sent (Zalo OA): its echo is
    recognised as the bot's own in whichever process the echo arrives. Pruned after days."""

    __tablename__ = "sent_messages"

    channel: Mapped[Channel] = mapped_column(_enum(Channel), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    district: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(255))
    sent_at: Mapped[datetime] = mapped_column(index=True)


class PendingEcho(Base):
    """A Zalo OA echo not yet known to be the bot's own nor a person's: its message id was not
    recorded as sent when the webhook arrived (the send may still be in flight). Kept until it
    is judged (bots.channels: a pause, or dropped as the bot's own), so a process that dies
    before judging it loses nothing."""

    __tablename__ = "pending_echoes"

    channel: Mapped[Channel] = mapped_column(_enum(Channel), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    district: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(255))
    timestamp: Mapped[datetime]  # when the platform says the message was sent
    seen_at: Mapped[datetime] = mapped_column(index=True)  # when the webhook brought the echo


# -- the organiser console (bots/console) ---------------------------------------------------------


class OrganiserRole(enum.Enum):
    ADMIN = "admin"  # everything in its subtree, including the subtree's organiser accounts
    ORGANISER = "organiser"  # reviews and conversations (hand-over) in its subtree
    REVIEWER = "reviewer"  # reviews only, of its units (all of its subtree when none are listed)


class ReviewDecision(enum.Enum):
    ACCEPT = "accept"  # one evidence item is good
    REJECT = "reject"  # one evidence item must be sent again (with a reason)
    APPROVE = "approve"  # the whole submission: every item accepted


class Organiser(Base):
    """A console account. `org` is the root of the subtree it may see; a reviewer may be
    limited further to some units (slugs in `units`, each with its own subtree)."""

    __tablename__ = "organisers"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(320), unique=True)  # an email, lower-cased
    name: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, never the password
    role: Mapped[OrganiserRole] = mapped_column(_enum(OrganiserRole))
    org: Mapped[str] = mapped_column(String(100), index=True)
    units: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(255))  # "cli", "first-run", ...
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    password_changed_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class OrganiserSession(Base):
    """A console login. The cookie holds a random token; only its SHA-256 is stored here."""

    __tablename__ = "organiser_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    organiser_id: Mapped[int] = mapped_column(ForeignKey("organisers.id"), index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))


class LoginAttempt(Base):
    """Every console login attempt: the rate limit per account and per address counts these."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_login_at", "login", "at"),
        Index("ix_login_attempts_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    login: Mapped[str] = mapped_column(String(320))  # as typed (lower-cased), known or not
    ip: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)


class Review(Base):
    """An organiser's decision on an evidence item (or, APPROVE, on a whole submission).

    A decision the participant must hear of (`notify`) enters their conversation as a SYSTEM
    event; `notified_at` stays empty until it has (the console's dispatcher sends them in
    order, one rejection at a time, and retries after a failure)."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_notify_notified_at", "notify", "notified_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    # Deleting a person's data deletes their evidence rows; their reviews (whose reasons may
    # quote that data) go with them, in the database itself (the writer's bulk delete).
    evidence_id: Mapped[int | None] = mapped_column(
        ForeignKey("evidence_items.id", ondelete="CASCADE"), index=True
    )
    organiser_id: Mapped[int | None] = mapped_column(ForeignKey("organisers.id"), index=True)
    decision: Mapped[ReviewDecision] = mapped_column(_enum(ReviewDecision))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    notify: Mapped[bool] = mapped_column(Boolean, default=False)
    notified_at: Mapped[datetime | None]


class Handover(Base):
    """An organiser took a conversation over from the bot (ChannelIdentity.paused), until
    handed back by hand or automatically after a quiet period."""

    __tablename__ = "handovers"
    __table_args__ = (Index("ix_handovers_released_at", "released_at", "last_activity_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("channel_identities.id"), index=True)
    organiser_id: Mapped[int | None] = mapped_column(ForeignKey("organisers.id"), index=True)
    taken_at: Mapped[datetime]
    last_activity_at: Mapped[datetime]  # taken, or the organiser's last message
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(255))  # "organiser:<id>", "timeout"


# -- reports (bots/reports) ----------------------------------------------------------------------

# Participants name their unit in their profile, as the unit's slug (what `expect: unit` saves)
# or, in older or imported data, its name: reports look units up by name too.
Index("ix_organisations_name", Organisation.name)


class OrganisationPath(Base):
    """The organisation tree as a closure table: every (ancestor, descendant) pair, a node
    being its own ancestor at depth 0. Roll-ups over a subtree are one join and a GROUP BY.
    Rebuilt from flows.yaml at start-up (bots.reports.organisations.sync_organisations)."""

    __tablename__ = "organisation_paths"

    ancestor_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    descendant_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id"), primary_key=True, index=True
    )
    depth: Mapped[int] = mapped_column(Integer)


class OrganisationFigures(Base):
    """What reports need of a node besides its row: its place in the file order, and the
    member count and quota of its whole subtree (declared, or summed over its children; a
    percent quota turned into a number of people)."""

    __tablename__ = "organisation_figures"

    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)  # depth-first order of flows.yaml
    depth: Mapped[int] = mapped_column(Integer)
    members_total: Mapped[int | None] = mapped_column(Integer)
    quota_total: Mapped[int | None] = mapped_column(Integer)
    quota_label: Mapped[str | None] = mapped_column(String(16))  # "40%" or "2356", as written
    district: Mapped[bool] = mapped_column(Boolean, default=False)  # owns conversations
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # still in flows.yaml
    synced_at: Mapped[datetime]


class ReportedEntry(Base):
    """An entry recorded by `action: report`: e.g. a citizen a cadre guided (Sốp Cộp). The
    citizen-ID number is never stored, only its keyed hash (`subject_hash`)."""

    __tablename__ = "reported_entries"
    __table_args__ = (Index("ix_reported_entries_campaign_kind", "campaign", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    district: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(64))
    flow: Mapped[str] = mapped_column(String(100))
    campaign: Mapped[str | None] = mapped_column(String(100))
    wave: Mapped[str | None] = mapped_column(String(100))
    ref: Mapped[str | None] = mapped_column(String(64))  # the reporter's entry referral code
    subject_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # HMAC-SHA256 hex
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)


class ParticipantWeek(Base):
    """A participant's messages in one week (Monday to Sunday, Vietnam time): "active
    participants per week" counts these rows. Written with every inbound (touch_identity)."""

    __tablename__ = "participant_weeks"

    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), primary_key=True)
    week_start: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]


# -- certificates (bots/certificates) -------------------------------------------------------------


class CertificateStatus(enum.Enum):
    REQUESTED = "requested"  # the person confirmed the name; waiting to be drawn
    ISSUED = "issued"  # drawn, stored, numbered: the verify page shows it as valid
    FAILED = "failed"  # cannot be drawn as asked (a character the font lacks): organisers fix
    REVOKED = "revoked"  # withdrawn, or the person's data was deleted (files removed)


class Certificate(Base):
    """A certificate of one approved submission (one per submission: a replayed request never
    issues twice). `name` and `unit` are exactly what is printed; the files are kept
    content-addressed in the certificate file store and served under /media/<sha256>.<ext>
    (unguessable); the serial is what the public verify page looks up."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("campaign", "sequence"),
        Index("ix_certificates_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str | None] = mapped_column(String(40), unique=True)
    sequence: Mapped[int | None] = mapped_column(Integer)  # number within the campaign
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), unique=True)
    # The conversation the person confirmed the name in: delivered there.
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("channel_identities.id"))
    district: Mapped[str] = mapped_column(String(100), index=True)
    campaign: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(255))  # as printed (confirmed by the person)
    unit: Mapped[str | None] = mapped_column(String(255))  # the unit's name as printed
    status: Mapped[CertificateStatus] = mapped_column(
        _enum(CertificateStatus), default=CertificateStatus.REQUESTED
    )
    requested_at: Mapped[datetime]
    issued_on: Mapped[date | None] = mapped_column(Date)  # the printed date (Vietnam time)
    issued_at: Mapped[datetime | None]
    png_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    badge_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # drawing attempts that failed
    last_error: Mapped[str | None] = mapped_column(Text)  # for organisers (Vietnamese)
    delivered_via: Mapped[str | None] = mapped_column(String(16))  # "chat", "email"
    delivered_at: Mapped[datetime | None]
    chat_sent_at: Mapped[datetime | None]  # entered into the person's conversation
    emailed_at: Mapped[datetime | None]
    email_message_id: Mapped[str | None] = mapped_column(String(255))
    email_attempts: Mapped[int] = mapped_column(Integer, default=0)
    email_error: Mapped[str | None] = mapped_column(Text)
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(255))


class CertificateCode(Base):
    """A one-time code for finding one's certificates on /chung-nhan: sent to the person's
    chat or e-mail; only its hash is stored; it expires and allows a few attempts."""

    __tablename__ = "certificate_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), index=True)  # E.164
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None]
    ip: Mapped[str] = mapped_column(String(64), index=True)
    sent_via: Mapped[str | None] = mapped_column(String(16))  # "chat", "email", None: unknown


__all__ = [
    "AuditEntry",
    "Base",
    "Certificate",
    "CertificateCode",
    "CertificateStatus",
    "ChannelIdentity",
    "EvidenceItem",
    "EvidenceKind",
    "EvidenceStatus",
    "Handover",
    "LoginAttempt",
    "NotificationKind",
    "Organisation",
    "OrganisationFigures",
    "OrganisationPath",
    "Organiser",
    "OrganiserNotification",
    "OrganiserRole",
    "OrganiserSession",
    "Participant",
    "ParticipantWeek",
    "ProcessedInbound",
    "ReferralCredit",
    "ReportedEntry",
    "Review",
    "ReviewDecision",
    "Submission",
    "SubmissionStatus",
    "Tag",
    "UTCDateTime",
    "ZaloTokenPair",
]
