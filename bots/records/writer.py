"""Writes the engine's record events, once per inbound message.

`apply` runs every event of one inbound message in one transaction that also inserts the
`processed_inbound` row for (conversation, inbound id): a replayed inbound (a worker that
crashed after writing records but before committing the session) finds the row and writes
nothing. Each function takes the session maker first; `Records` binds one for callers that
prefer methods.

Decisions (docs/state.md):
- A conversation's participant is created with its channel identity on first contact (an
  empty profile; personal data only arrives after consent, through `FieldSaved`).
- Evidence goes to the participant's open draft submission of the campaign (created when
  needed); a second answer to the same criterion marks the earlier one `replaced`.
  `SubmissionSubmitted` turns the draft into a submission for review; later evidence starts a
  new draft. Submitted submissions are never changed by the bot.
- `HandoverRequested` notifies organisers and pauses the bot for that channel identity.
- `DataDeletionRequested` blanks the profile and consent, deletes evidence rows and their files
  (files no other evidence row uses), scrubs organiser notifications, and keeps submissions,
  tags and referral credits as anonymous counts. The profile keeps only the entries that name
  an organisation (the person's unit: not personal data), so counts per unit stay right; the
  retention purge (bots/ops/purge.py) follows the same rules.
- `EntryReported` (`action: report`) becomes a `reported_entries` row of the reporter; a
  citizen-ID field is stored only as its keyed hash (HMAC-SHA256), hashed here when the engine
  did not already (docs/bao-cao.md).
- `touch_identity` also counts the participant's messages of the week (`participant_weeks`),
  for "active participants per week".
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots.certificates.records import erase_certificates, request_certificate
from bots.records.files import FileStore, relative_path
from bots.records.models import (
    AuditEntry,
    ChannelIdentity,
    EvidenceItem,
    EvidenceKind,
    EvidenceStatus,
    NotificationKind,
    Organisation,
    OrganiserNotification,
    Participant,
    ParticipantWeek,
    ProcessedInbound,
    ReferralCredit,
    ReportedEntry,
    Submission,
    SubmissionStatus,
    Tag,
)
from bots.state import conversation_id
from flows.events import (
    CITIZEN_ID_HASH,
    CertificateRequested,
    ConsentRecorded,
    DataDeletionRequested,
    EntryReported,
    EvidenceSaved,
    FieldSaved,
    FlowFinished,
    HandoverRequested,
    OrganisersNotified,
    RecordEvent,
    ReferralRecorded,
    SubmissionSubmitted,
    Tagged,
    citizen_id_hash,
)
from flows.vocab import ConversationKey

try:
    from zoneinfo import ZoneInfo

    LOCAL_TZ: tzinfo = ZoneInfo("Asia/Ho_Chi_Minh")
except Exception:  # no tz database: Vietnam has kept UTC+7 without DST since 1975
    LOCAL_TZ = timezone(timedelta(hours=7))

Sessions = async_sessionmaker[AsyncSession]

# Profile fields copied into indexed columns, by the names flows use for them.
NAME_FIELDS = frozenset({"ho_ten", "ho_va_ten", "name", "full_name"})
PHONE_FIELDS = frozenset({"so_dien_thoai", "dien_thoai", "sdt", "phone"})
EMAIL_FIELDS = frozenset({"email", "mail"})

DELETED_TEXT = "(nội dung đã xóa theo yêu cầu xóa dữ liệu cá nhân)"
BOT = "bot"


def _of(key: ConversationKey) -> Any:
    """The WHERE clause picking the conversation's channel identity."""
    return and_(
        ChannelIdentity.district == key.district,
        ChannelIdentity.channel == key.channel,
        ChannelIdentity.user_id == key.user_id,
    )


async def _identity(
    session: AsyncSession, key: ConversationKey, now: datetime
) -> tuple[ChannelIdentity, Participant]:
    """The conversation's channel identity and participant, created on first contact."""
    row = (
        await session.execute(
            select(ChannelIdentity, Participant)
            .join(Participant, Participant.id == ChannelIdentity.participant_id)
            .where(_of(key))
        )
    ).first()
    if row is not None:
        return row[0], row[1]
    participant = Participant(district=key.district, profile={}, created_at=now, updated_at=now)
    session.add(participant)
    await session.flush()
    identity = ChannelIdentity(
        district=key.district,
        channel=key.channel,
        user_id=key.user_id,
        participant_id=participant.id,
        paused=False,
        created_at=now,
    )
    session.add(identity)
    await session.flush()
    return identity, participant


def _audit(
    session: AsyncSession,
    now: datetime,
    action: str,
    participant: Participant,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            at=now, actor=BOT, action=action, participant_id=participant.id, detail=detail or {}
        )
    )


async def _draft(
    session: AsyncSession, participant: Participant, campaign: str, now: datetime
) -> Submission:
    draft = await session.scalar(
        select(Submission)
        .where(
            Submission.participant_id == participant.id,
            Submission.campaign == campaign,
            Submission.status == SubmissionStatus.DRAFT,
        )
        .order_by(Submission.id.desc())
        .limit(1)
    )
    if draft is None:
        draft = Submission(
            participant_id=participant.id,
            campaign=campaign,
            status=SubmissionStatus.DRAFT,
            created_at=now,
            updated_at=now,
        )
        session.add(draft)
        await session.flush()
    return draft


def _save_field(participant: Participant, name: str, value: str, now: datetime) -> None:
    participant.profile = {**participant.profile, name: value}  # a new dict: JSON change seen
    if name in NAME_FIELDS:
        participant.name = value
    elif name in PHONE_FIELDS:
        participant.phone = value
    elif name in EMAIL_FIELDS:
        participant.email = value
    participant.deleted_at = None  # they came back and gave their data again
    participant.purged_at = None
    participant.updated_at = now


async def _save_evidence(
    session: AsyncSession, participant: Participant, event: EvidenceSaved, now: datetime
) -> None:
    draft = await _draft(session, participant, event.campaign, now)
    await session.execute(
        update(EvidenceItem)
        .where(
            EvidenceItem.submission_id == draft.id,
            EvidenceItem.criterion == event.criterion,
            EvidenceItem.status == EvidenceStatus.PENDING,
        )
        .values(status=EvidenceStatus.REPLACED)
    )
    item = EvidenceItem(
        submission_id=draft.id,
        criterion=event.criterion,
        kind=EvidenceKind.TEXT,
        text=event.text,
        status=EvidenceStatus.PENDING,
        created_at=now,
    )
    attachment = event.attachment
    if attachment is not None:
        item.kind = (
            EvidenceKind.IMAGE if attachment.mime.startswith("image/") else EvidenceKind.FILE
        )
        item.sha256 = attachment.sha256
        item.file_path = relative_path(attachment.sha256) if attachment.sha256 else None
        item.mime = attachment.mime or None
        item.size = attachment.size
        item.platform_unique_id = attachment.unique_id
        item.qr_payload = attachment.qr
        item.perceptual_hash = attachment.phash
    session.add(item)
    draft.updated_at = now


async def _submit(
    session: AsyncSession, participant: Participant, event: SubmissionSubmitted, now: datetime
) -> None:
    draft = await _draft(session, participant, event.campaign, now)
    draft.status = SubmissionStatus.SUBMITTED
    draft.wave = event.wave
    draft.submitted_at = now
    draft.updated_at = now
    _audit(session, now, "submission_submitted", participant, {"submission": draft.id})


async def _refer(
    session: AsyncSession,
    identity: ChannelIdentity,
    participant: Participant,
    event: ReferralRecorded,
    now: datetime,
) -> None:
    if identity.referral_code is None:
        identity.referral_code = event.code
    exists = await session.scalar(
        select(ReferralCredit.id).where(
            ReferralCredit.code == event.code,
            ReferralCredit.participant_id == participant.id,
            ReferralCredit.flow == event.flow,
        )
    )
    if exists is None:
        session.add(
            ReferralCredit(
                code=event.code, participant_id=participant.id, flow=event.flow, created_at=now
            )
        )


KeySource = Callable[[], bytes]


def _default_citizen_key() -> bytes:
    # Only when the application gave no key: the same key `loa serve` uses (env or data dir).
    from bots.reports.citizens import citizen_key_from_env

    return citizen_key_from_env()


def _hashed(value: str, key: KeySource) -> str | None:
    """The hex HMAC of a citizen-ID field value, whether the engine hashed it already or not;
    None for a value that is neither (never stored as it is)."""
    if value.startswith(CITIZEN_ID_HASH):
        digest = value[len(CITIZEN_ID_HASH) :]
        return digest if len(digest) == 64 else None
    digits = "".join(ch for ch in value if ch.isascii() and ch.isdigit())
    if not digits:
        return None
    return citizen_id_hash(key(), digits)[len(CITIZEN_ID_HASH) :]


def _report(
    session: AsyncSession,
    identity: ChannelIdentity,
    participant: Participant,
    event: EntryReported,
    now: datetime,
    key: KeySource,
) -> None:
    fields: dict[str, Any] = {}
    subject: str | None = None
    for name, value in event.fields:
        if name in event.protected:
            digest = _hashed(value, key)
            if digest is None:
                continue
            subject = subject or digest
            fields[name] = CITIZEN_ID_HASH + digest
        else:
            fields[name] = value
    session.add(
        ReportedEntry(
            participant_id=participant.id,
            district=identity.district,
            kind=event.kind,
            flow=event.flow,
            campaign=event.campaign,
            wave=event.wave,
            ref=event.ref,
            subject_hash=subject,
            fields=fields,
            created_at=now,
        )
    )


async def _tag(session: AsyncSession, participant: Participant, tag: str, now: datetime) -> None:
    exists = await session.scalar(
        select(Tag.id).where(Tag.participant_id == participant.id, Tag.tag == tag)
    )
    if exists is None:
        session.add(Tag(participant_id=participant.id, tag=tag, created_at=now))


async def units_only(
    session: AsyncSession, profile: dict[str, Any], keep: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """What of a profile survives a deletion of personal data: the entries that name an
    organisation by slug or name (the unit a person belongs to is not personal data, and
    reports count by it), plus the fields listed in `keep`."""
    values = {value for value in profile.values() if isinstance(value, str) and value}
    known: set[str] = set()
    if values:
        rows = await session.execute(
            select(Organisation.slug, Organisation.name).where(
                or_(Organisation.slug.in_(values), Organisation.name.in_(values))
            )
        )
        known = {value for row in rows for value in row}
    return {
        name: value
        for name, value in profile.items()
        if name in keep or (isinstance(value, str) and value in known)
    }


async def _erase(session: AsyncSession, participant: Participant, now: datetime) -> set[str]:
    """Delete a participant's personal data inside the caller's transaction; returns the hashes
    of files that were evidence (to delete once committed, if nothing else uses them)."""
    participant.profile = await units_only(session, participant.profile)
    participant.name = participant.phone = participant.email = None
    participant.consent_given_at = None
    participant.consent_text = None
    participant.deleted_at = now
    participant.updated_at = now
    submissions = select(Submission.id).where(Submission.participant_id == participant.id)
    hashes = set(
        (
            await session.scalars(
                select(EvidenceItem.sha256).where(
                    EvidenceItem.submission_id.in_(submissions), EvidenceItem.sha256.is_not(None)
                )
            )
        ).all()
    )
    await session.execute(delete(EvidenceItem).where(EvidenceItem.submission_id.in_(submissions)))
    await session.execute(
        update(OrganiserNotification)
        .where(OrganiserNotification.participant_id == participant.id)
        .values(text=DELETED_TEXT)
    )
    await erase_certificates(session, participant.id, now)  # revoked; files go in a sweep
    _audit(session, now, "personal_data_deleted", participant, {"files": len(hashes)})
    return {sha for sha in hashes if sha}


async def _apply_one(
    session: AsyncSession,
    identity: ChannelIdentity,
    participant: Participant,
    event: RecordEvent,
    now: datetime,
    key: KeySource = _default_citizen_key,
) -> set[str]:
    match event:
        case FieldSaved(name=name, value=value):
            _save_field(participant, name, value, now)
        case ConsentRecorded(given=given, text=text):
            participant.consent_given_at = now if given else None
            participant.consent_text = text
            participant.updated_at = now
            _audit(session, now, "consent_given" if given else "consent_refused", participant)
        case EvidenceSaved():
            await _save_evidence(session, participant, event, now)
        case SubmissionSubmitted():
            await _submit(session, participant, event, now)
        case ReferralRecorded():
            await _refer(session, identity, participant, event, now)
        case EntryReported():
            _report(session, identity, participant, event, now, key)
        case Tagged(tag=tag):
            await _tag(session, participant, tag, now)
        case OrganisersNotified(text=text):
            session.add(
                OrganiserNotification(
                    district=identity.district,
                    participant_id=participant.id,
                    kind=NotificationKind.NOTIFY,
                    text=text,
                    created_at=now,
                )
            )
        case HandoverRequested(reason=reason):
            identity.paused = True
            session.add(
                OrganiserNotification(
                    district=identity.district,
                    participant_id=participant.id,
                    kind=NotificationKind.HANDOVER,
                    text=reason,
                    created_at=now,
                )
            )
            _audit(session, now, "handover_requested", participant)
        case FlowFinished(flow=flow):
            _audit(session, now, "flow_finished", participant, {"flow": flow})
        case CertificateRequested():
            # A row only: drawn and sent after the commit (bots/certificates/issue.py).
            await request_certificate(session, identity, participant, event, now)
        case DataDeletionRequested():
            return await _erase(session, participant, now)
    return set()


async def _delete_unused_files(sessions: Sessions, files: FileStore, hashes: set[str]) -> None:
    if not hashes:
        return
    async with sessions() as session:
        used = set(
            (
                await session.scalars(
                    select(EvidenceItem.sha256).where(EvidenceItem.sha256.in_(hashes)).distinct()
                )
            ).all()
        )
    for sha in hashes - used:
        await files.delete_async(sha)


async def apply(
    session_factory: Sessions,
    key: ConversationKey,
    inbound_id: str,
    events: Sequence[RecordEvent],
    now: datetime,
    *,
    files: FileStore | None = None,
    citizen_key: bytes | None = None,
) -> None:
    """Write `events` (from the inbound message `inbound_id`) once: a replay writes nothing.

    `files` is where evidence files live; without it `DataDeletionRequested` deletes the rows
    but leaves the files for a later sweep. `citizen_key` hashes citizen-ID numbers of
    reported entries that the engine left unhashed (default: LOA_CITIZEN_KEY, else the key
    file in the data directory; bots.reports.citizens)."""
    if not events:
        return
    conversation = conversation_id(key)
    if all(type(event) is FieldSaved for event in events):
        engine = session_factory.kw["bind"]
        if engine.dialect.name == "postgresql" and await _save_fields_at_once(
            engine, key, conversation, inbound_id, events, now  # type: ignore[arg-type]
        ):
            return
    secret: KeySource = (lambda: citizen_key) if citizen_key else _default_citizen_key
    doomed: set[str] = set()
    try:
        async with session_factory() as session, session.begin():
            if not await _first_time(session, conversation, inbound_id, now):
                return
            identity, participant = await _identity(session, key, now)
            for event in events:
                doomed |= await _apply_one(session, identity, participant, event, now, secret)
    except IntegrityError:
        # Another writer applied the same inbound at the same moment (PostgreSQL lets both
        # transactions start): theirs won, ours wrote nothing.
        async with session_factory() as session:
            if await session.get(ProcessedInbound, (conversation, inbound_id)) is not None:
                return
        raise
    if files is not None:
        await _delete_unused_files(session_factory, files, doomed)


async def _save_fields_at_once(
    engine: Any,
    key: ConversationKey,
    conversation: str,
    inbound_id: str,
    events: Sequence[FieldSaved],
    now: datetime,
) -> bool:
    """The commonest turn, answers saved to the profile, as one PostgreSQL statement outside a
    transaction (it is atomic on its own): the replay row is inserted and the participant
    updated only if the person is known and the inbound new. False when it wrote nothing (a
    replay, or someone new): the general path then decides, as it would have."""
    patch: dict[str, str] = {}
    columns: dict[str, str] = {}
    for event in events:
        patch[event.name] = event.value
        if event.name in NAME_FIELDS:
            columns["name"] = event.value
        elif event.name in PHONE_FIELDS:
            columns["phone"] = event.value
        elif event.name in EMAIL_FIELDS:
            columns["email"] = event.value
    statement = _fields_statement(tuple(sorted(columns)))
    params = {
        "district": key.district, "channel": key.channel, "user_id": key.user_id,
        "conversation": conversation, "inbound_id": inbound_id, "now": now,
        "patch": json.dumps(patch, ensure_ascii=False), **columns,
    }
    async with _autocommit(engine).connect() as connection:
        return (await connection.execute(statement, params)).first() is not None


@cache
def _fields_statement(columns: tuple[str, ...]) -> Any:
    """`_save_fields_at_once`'s statement for the indexed columns it sets, built once."""
    sets = "".join(f"{column} = :{column}, " for column in columns)
    return text(
        "WITH who AS (SELECT participant_id FROM channel_identities"
        " WHERE district = :district AND channel = :channel AND user_id = :user_id),"
        " first AS (INSERT INTO processed_inbound (conversation, inbound_id, processed_at)"
        " SELECT :conversation, :inbound_id, :now WHERE EXISTS (SELECT 1 FROM who)"
        " ON CONFLICT DO NOTHING RETURNING 1)"
        " UPDATE participants SET"
        " profile = (CAST(profile AS jsonb) || CAST(:patch AS jsonb))::json,"
        f" {sets}deleted_at = NULL, purged_at = NULL, updated_at = :now"
        " FROM who WHERE participants.id = who.participant_id AND EXISTS (SELECT 1 FROM first)"
        " RETURNING participants.id"
    ).bindparams(
        bindparam("now", type_=Participant.__table__.c.updated_at.type),
        bindparam("channel", type_=ChannelIdentity.__table__.c.channel.type),
    )


_AUTOCOMMIT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _autocommit(engine: Any) -> Any:
    """The engine without transactions (single statements that are atomic on their own), made
    once per engine: building it per call cost more than the statement."""
    found = _AUTOCOMMIT.get(engine)
    if found is None:
        found = _AUTOCOMMIT[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return found


async def _first_time(
    session: AsyncSession, conversation: str, inbound_id: str, now: datetime
) -> bool:
    """Insert the inbound's `processed_inbound` row; False when it was there already (a
    replay). One statement on SQLite and PostgreSQL (INSERT … ON CONFLICT DO NOTHING)."""
    values = {"conversation": conversation, "inbound_id": inbound_id, "processed_at": now}
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):  # portable: read, then insert
        if await session.get(ProcessedInbound, (conversation, inbound_id)) is not None:
            return False
        session.add(ProcessedInbound(**values))
        return True
    table = cast(Table, ProcessedInbound.__table__)
    insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table).values(values)
    result = await session.execute(insert.on_conflict_do_nothing())
    return bool(getattr(result, "rowcount", 1))


async def touch_identity(
    session_factory: Sessions, key: ConversationKey, now: datetime, *, ref: str | None = None
) -> None:
    """Record an inbound's time (the platform's messaging window opens from the last one) and
    the deep-link ref the person first came with.

    It runs with every person's first message and then about once a minute, so for someone
    known it is one statement on PostgreSQL (the identity's UPDATE feeding the week's upsert,
    outside any transaction) and two in one transaction elsewhere, instead of loading the
    identity and participant through the ORM; each round trip to the database server cost
    more CPU here than the statement itself."""
    params = {
        "p_district": key.district,
        "p_channel": key.channel,
        "p_user_id": key.user_id,
        "p_now": now,
        "p_ref": ref,
        "p_week": week_of(now),
    }
    engine = session_factory.kw["bind"]
    if engine.dialect.name == "postgresql":
        async with _autocommit(engine).connect() as conn:
            if (await conn.execute(_touch_statements()[1], params)).first() is not None:
                return
    else:
        async with session_factory() as session, session.begin():
            participant_id = (await session.execute(_touch_statements()[0], params)).scalar()
            if participant_id is not None:
                await _count_week(session, participant_id, now)
                return
    async with session_factory() as session, session.begin():  # first contact
        identity, _ = await _identity(session, key, now)
        if identity.last_inbound_at is None or identity.last_inbound_at < now:
            identity.last_inbound_at = now
        if ref and identity.entry_ref is None:
            identity.entry_ref = ref
        await _count_week(session, identity.participant_id, now)


@cache
def _touch_statements() -> tuple[Any, Any]:
    """(the identity's UPDATE … RETURNING participant_id, and on PostgreSQL that UPDATE as a CTE
    feeding the week's upsert), built once: SQLAlchemy then reuses their compiled form."""
    ident = ChannelIdentity.__table__.c
    now = bindparam("p_now", type_=ChannelIdentity.__table__.c.last_inbound_at.type)
    touch = (
        update(cast(Table, ChannelIdentity.__table__))
        .where(
            ident.district == bindparam("p_district"),
            ident.channel == bindparam("p_channel", type_=ident.channel.type),
            ident.user_id == bindparam("p_user_id"),
        )
        .values(
            last_inbound_at=case(
                (or_(ident.last_inbound_at.is_(None), ident.last_inbound_at < now), now),
                else_=ident.last_inbound_at,
            ),
            entry_ref=func.coalesce(
                ident.entry_ref, bindparam("p_ref", type_=ident.entry_ref.type)
            ),
        )
        .returning(ident.participant_id)
    )
    touched = touch.cte("touched")
    week = cast(Table, ParticipantWeek.__table__)
    insert = postgresql.insert(week).from_select(
        ["participant_id", "week_start", "messages", "first_at", "last_at"],
        select(
            touched.c.participant_id,
            bindparam("p_week", type_=week.c.week_start.type),
            literal(1),
            now,
            now,
        ),
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[week.c.participant_id, week.c.week_start],
        set_={"messages": week.c.messages + 1, "last_at": insert.excluded.last_at},
    ).returning(week.c.participant_id)
    return touch, upsert


def week_of(at: datetime) -> date:
    """The Monday (Vietnam time) of the week `at` falls in."""
    local = at.astimezone(LOCAL_TZ).date()
    return local - timedelta(days=local.weekday())


async def _count_week(session: AsyncSession, participant_id: int, now: datetime) -> None:
    """One more message this week: an upsert, so two processes never collide on the row."""
    values = {
        "participant_id": participant_id,
        "week_start": week_of(now),
        "messages": 1,
        "first_at": now,
        "last_at": now,
    }
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):  # a portable read-then-write elsewhere
        row = await session.get(ParticipantWeek, (participant_id, values["week_start"]))
        if row is None:
            session.add(ParticipantWeek(**values))
        else:
            row.messages += 1
            row.last_at = max(row.last_at, now)
        return
    week = ParticipantWeek
    insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(week).values(values)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[week.participant_id, week.week_start],
            set_={"messages": week.messages + 1, "last_at": insert.excluded.last_at},
        )
    )


async def load_profile(session_factory: Sessions, key: ConversationKey) -> dict[str, str]:
    """The saved profile of the conversation's participant ({} for someone new, or whose
    personal data was deleted), to rebuild a session whose stored value expired."""
    async with session_factory() as session:
        profile = await session.scalar(
            select(Participant.profile)
            .join(ChannelIdentity, ChannelIdentity.participant_id == Participant.id)
            .where(
                ChannelIdentity.district == key.district,
                ChannelIdentity.channel == key.channel,
                ChannelIdentity.user_id == key.user_id,
                # What a deletion kept (the unit) is no registration: the person starts over.
                Participant.deleted_at.is_(None),
                Participant.purged_at.is_(None),
            )
        )
    return {str(k): str(v) for k, v in (profile or {}).items()}


async def delete_personal_data(
    session_factory: Sessions,
    key: ConversationKey,
    now: datetime,
    *,
    files: FileStore | None = None,
) -> None:
    """Delete the conversation's participant's personal data (outside any inbound message,
    e.g. on an organiser's action). Same effect as the `DataDeletionRequested` event."""
    async with session_factory() as session, session.begin():
        _, participant = await _identity(session, key, now)
        doomed = await _erase(session, participant, now)
    if files is not None:
        await _delete_unused_files(session_factory, files, doomed)


class Records:
    """The functions above bound to one session maker and file store."""

    def __init__(
        self,
        sessions: Sessions,
        files: FileStore | None = None,
        reads: Sessions | None = None,
        *,
        citizen_key: bytes | None = None,
    ) -> None:
        self.sessions = sessions
        self.files = files
        self.reads = reads or sessions
        self.citizen_key = citizen_key

    async def apply(
        self,
        key: ConversationKey,
        inbound_id: str,
        events: Sequence[RecordEvent],
        now: datetime,
    ) -> None:
        await apply(
            self.sessions, key, inbound_id, events, now, files=self.files,
            citizen_key=self.citizen_key,
        )

    async def touch_identity(
        self, key: ConversationKey, now: datetime, *, ref: str | None = None
    ) -> None:
        await touch_identity(self.sessions, key, now, ref=ref)

    async def load_profile(self, key: ConversationKey) -> dict[str, str]:
        return await load_profile(self.reads, key)

    async def delete_personal_data(self, key: ConversationKey, now: datetime) -> None:
        await delete_personal_data(self.sessions, key, now, files=self.files)


__all__ = [
    "Records",
    "apply",
    "delete_personal_data",
    "load_profile",
    "touch_identity",
    "units_only",
    "week_of",
]
