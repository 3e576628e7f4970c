"""Issuing certificates: number, draw, store, deliver — after the records are committed.

The engine asks the person to confirm the printed name and emits `CertificateRequested`; the
records writer stores a `certificates` row (`requested`) in the same transaction as the rest of
that message (bots.certificates.records), one per approved submission. Nothing heavy happens
under the conversation's lock: the pipeline's records hook calls `CertificateService.kick()`,
which schedules `run()` in the background, and a periodic sweep runs it too (crash recovery,
retries). `run()`:

1. numbers each requested certificate (serial `CDS-2023-000123-K7Q4XM`; the sequence within the
   campaign is taken in a write transaction guarded by a unique index);
2. draws the PNG + PDF and the badge in the `CertificateRenderer` process pool (never on the
   event loop), stores the files content-addressed in `<data dir>/files/certificates/`, and
   marks the row `issued` with a guarded update (two processes racing issue it once);
3. delivers: a SYSTEM "certificate" event (message id `certificate:<id>`, so the inbox drops a
   repeat) enters the person's conversation, and the engine hands over the image, the PDF link,
   the verify link and the badge through the normal sender — at once while the platform's
   messaging window is open, otherwise when they next write (the sender keeps it deferred).
   While the window is closed it is also e-mailed (PDF and badge attached) to the registered
   address, when SMTP is configured; temporary mail failures are retried by the sweep, final
   ones become an organiser notification.
4. deletes the files of certificates revoked by a deletion of personal data.

Files are served at `/media/<sha256>.<ext>` (`media_path`): the hash of a file that holds a
random serial cannot be guessed, and evidence files (another folder) are never reachable there.
Decisions are in docs/chung-nhan.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from bots.certificates.mail import (
    MailError,
    SmtpSettings,
    attachments_for,
    send_certificate_mail,
)
from bots.certificates.serial import campaign_code, new_serial
from bots.delivery import window_open
from bots.records.db import Database
from bots.records.files import FileStore
from bots.records.models import (
    AuditEntry,
    Certificate,
    CertificateStatus,
    ChannelIdentity,
    NotificationKind,
    OrganiserNotification,
    Participant,
)
from flows.compiler import CompiledBundle
from flows.schema import ExpectKind
from flows.vocab import Inbound, InboundKind

try:
    from zoneinfo import ZoneInfo

    LOCAL_TZ: tzinfo = ZoneInfo("Asia/Ho_Chi_Minh")
except Exception:  # no tz database: Vietnam has kept UTC+7 without DST since 1975
    LOCAL_TZ = timezone(timedelta(hours=7))

log = logging.getLogger("loa.certificates")

Notify = Callable[[Inbound], Awaitable[Any]]

SYSTEM_CERTIFICATE = "certificate"  # flows.engine.SYSTEM_CERTIFICATE
SYSTEM_APPROVE = "approve"
MEDIA_PREFIX = "/media/"
MEDIA_TYPES: Mapping[str, str] = {"png": "image/png", "pdf": "application/pdf"}
_MEDIA_NAME = re.compile(r"([0-9a-f]{64})\.(png|pdf)")
MAX_ATTEMPTS = 5  # drawing attempts before a certificate is marked failed for organisers
MAX_EMAIL_ATTEMPTS = 5  # temporary mail failures retried by the sweep
SWEEP_EVERY = 60.0  # seconds between sweeps (requested, undelivered, retries, erased files)
BATCH = 50
NAME_FIELDS = ("ho_ten", "ho_va_ten", "name", "full_name")


def certificate_files(data_dir: Path) -> FileStore:
    """Where certificate files live: content-addressed, beside (not among) the evidence."""
    return FileStore(Path(data_dir) / "files" / "certificates")


def media_name(sha256: str, ext: str) -> str:
    return f"{sha256}.{ext}"


def media_path(files: FileStore, name: str) -> Path | None:
    """The certificate file behind `/media/<name>` (None: not a certificate file of ours)."""
    match = _MEDIA_NAME.fullmatch(name)
    if match is None:
        return None
    path = files.path(match.group(1))
    return path if path.is_file() else None


def local_date(moment: datetime) -> date:
    return moment.astimezone(LOCAL_TZ).date()


def badge_title(campaign_title: str) -> str:
    """The words on the badge: the quoted name of a campaign ('Thử thách "Công dân số" năm
    2023' → "CÔNG DÂN SỐ"), else its title when short, else "HOÀN THÀNH"."""
    quoted = re.search(r"[\"“](.+?)[\"”]", campaign_title)
    text = quoted.group(1) if quoted else campaign_title
    text = " ".join(text.split()).upper()
    return text if 0 < len(text) <= 20 else "HOÀN THÀNH"


def unit_slug(profile: Mapping[str, Any], bundle: CompiledBundle) -> str | None:
    for name in sorted(n for n, kind in bundle.field_kinds.items() if kind is ExpectKind.UNIT):
        value = profile.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def profile_name(profile: Mapping[str, Any]) -> str:
    for name in NAME_FIELDS:
        value = profile.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return ""


@dataclass(frozen=True, slots=True)
class Drawn:
    png: str
    pdf: str
    badge: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CertificateService:
    """Issues and delivers certificates (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        files: FileStore,
        flows: Callable[[], CompiledBundle],
        notify: Notify,
        *,
        base_url: str,
        smtp: SmtpSettings | None = None,
        renderer: Any | None = None,
        clock: Callable[[], datetime] = _utcnow,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        self.db = db
        self.files = files
        self.flows = flows
        self.notify = notify
        self.base_url = base_url.rstrip("/")
        self.smtp = smtp
        self._renderer = renderer
        self.clock = clock
        self.sweep_every = sweep_every
        self._running: asyncio.Task[None] | None = None
        self._again = False
        self._sweeper: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- scheduling ------------------------------------------------------------------------------

    def kick(self) -> None:
        """Issue what is waiting, in the background (coalesced: one run at a time, and one more
        if asked meanwhile). Called by the records hook after a `CertificateRequested`."""
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.get_running_loop().create_task(self._run_in_background())

    async def _run_in_background(self) -> None:
        while True:
            self._again = False
            try:
                await self.run()
            except Exception:
                log.exception("issuing certificates failed; the sweep tries again")
            if not self._again:
                return

    def start(self) -> None:
        """Start the periodic sweep."""
        if self._sweeper is None and self.sweep_every > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            self.kick()

    async def idle(self) -> None:
        """Wait for a background run to finish (tests, shutdown)."""
        while self._running is not None and not self._running.done():
            await asyncio.gather(self._running, return_exceptions=True)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._running is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._running), timeout=10)
            except (TimeoutError, Exception):
                self._running.cancel()
                await asyncio.gather(self._running, return_exceptions=True)
        if self._renderer is not None:
            await self._renderer.aclose()
            self._renderer = None

    def renderer(self) -> Any:
        if self._renderer is None:
            from bots.certificates.render import CertificateRenderer  # Pillow, only when needed

            self._renderer = CertificateRenderer()
        return self._renderer

    # -- the work --------------------------------------------------------------------------------

    async def run(self) -> int:
        """One pass: issue requested certificates, deliver issued ones, retry e-mail, delete the
        files of erased ones. Returns how many were issued. One pass at a time per process."""
        async with self._lock:
            issued = 0
            async with self.db.reads() as session:
                requested = list((await session.scalars(
                    select(Certificate.id)
                    .where(Certificate.status == CertificateStatus.REQUESTED)
                    .order_by(Certificate.id).limit(BATCH)
                )).all())
            for certificate_id in requested:
                if await self.issue(certificate_id):
                    issued += 1
            async with self.db.reads() as session:
                undelivered = list((await session.scalars(
                    select(Certificate.id)
                    .where(
                        Certificate.status == CertificateStatus.ISSUED,
                        or_(
                            Certificate.chat_sent_at.is_(None),
                            (Certificate.emailed_at.is_(None))
                            & (Certificate.delivered_via.is_(None))
                            & (Certificate.email_attempts > 0)
                            & (Certificate.email_attempts < MAX_EMAIL_ATTEMPTS),
                        ),
                    )
                    .order_by(Certificate.id).limit(BATCH)
                )).all())
            for certificate_id in undelivered:
                try:
                    await self.deliver(certificate_id)
                except Exception:
                    log.exception("certificate %d: delivery failed; retried later", certificate_id)
            await self.forget_erased()
            return issued

    async def issue(self, certificate_id: int) -> bool:
        """Number, draw and store one requested certificate; True when this call issued it."""
        bundle = self.flows()
        now = self.clock()
        numbered = await self._number(certificate_id, bundle, now)
        if numbered is None:
            return False
        data, badge = numbered
        try:
            drawn = await self._draw(data, badge)
        except Exception as error:
            await self._failed(certificate_id, error, now)
            return False
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                update(Certificate)
                .where(Certificate.id == certificate_id,
                       Certificate.status == CertificateStatus.REQUESTED)
                .values(status=CertificateStatus.ISSUED, issued_at=now, png_sha256=drawn.png,
                        pdf_sha256=drawn.pdf, badge_sha256=drawn.badge, last_error=None)
                .execution_options(synchronize_session=False)
            )
            if not getattr(result, "rowcount", 1):
                return False  # another process issued it meanwhile (same serial, same files)
            row = await session.get(Certificate, certificate_id)
            assert row is not None
            session.add(AuditEntry(at=now, actor="bot", action="certificate_issued",
                                   participant_id=row.participant_id,
                                   detail={"certificate": row.id, "serial": row.serial or ""}))
        log.info("certificate %d issued", certificate_id)
        return True

    async def _number(
        self, certificate_id: int, bundle: CompiledBundle, now: datetime
    ) -> tuple[Any, Any] | None:
        """Give the certificate its serial, unit and date (once); the drawing data."""
        from bots.certificates.render import BadgeData, CertificateData

        for _ in range(3):  # a sequence taken by a concurrent process: take the next one
            try:
                async with self.db.sessions() as session, session.begin():
                    row = await session.get(Certificate, certificate_id)
                    if row is None or row.status is not CertificateStatus.REQUESTED:
                        return None
                    participant = await session.get(Participant, row.participant_id)
                    if row.serial is None:
                        today = local_date(now)
                        sequence = int(await session.scalar(
                            select(func.max(Certificate.sequence))
                            .where(Certificate.campaign == row.campaign)
                        ) or 0) + 1
                        row.sequence = sequence
                        row.serial = new_serial(campaign_code(row.campaign), today.year, sequence)
                        row.issued_on = today
                        slug = unit_slug(participant.profile or {}, bundle) if participant else None
                        name = bundle.unit_names.get(slug or "") if slug else None
                        if slug and name is None:
                            name = slug  # a unit saved by name (imported data)
                        if slug == row.district:
                            name = None  # the issuing organisation itself: printed above
                        row.unit = name
                    campaign = bundle.campaigns.get(row.campaign)
                    title = campaign.title if campaign is not None else row.campaign
                    organisation = bundle.district(row.district).name or row.district
                    assert row.serial is not None and row.issued_on is not None
                    data = CertificateData(
                        name=row.name,
                        unit=row.unit or "",
                        campaign=title,
                        issued_on=row.issued_on,
                        organisation=organisation,
                        serial=row.serial,
                        verify_url=self.verify_url(row.serial),
                        place="",
                        badge_title=badge_title(title),
                    )
                    badge = BadgeData(name=row.name, year=row.issued_on.year,
                                      title=badge_title(title))
                    return data, badge
            except IntegrityError:
                log.info("certificate %d: sequence taken meanwhile; trying again", certificate_id)
        return None

    async def _draw(self, data: Any, badge: Any) -> Drawn:
        renderer = self.renderer()
        rendered, badge_png = await asyncio.gather(renderer.certificate(data),
                                                   renderer.badge(badge))
        png = await self.files.put_async(rendered.png)
        pdf = await self.files.put_async(rendered.pdf)
        badge_sha = await self.files.put_async(badge_png)
        return Drawn(png, pdf, badge_sha)

    async def _failed(self, certificate_id: int, error: Exception, now: datetime) -> None:
        from bots.certificates.render import CertificateError

        final = isinstance(error, CertificateError)
        if not final:
            log.exception("certificate %d: drawing failed", certificate_id, exc_info=error)
        text = str(error) if final else f"Chưa vẽ được giấy chứng nhận ({type(error).__name__})."
        async with self.db.sessions() as session, session.begin():
            row = await session.get(Certificate, certificate_id)
            if row is None or row.status is not CertificateStatus.REQUESTED:
                return
            row.attempts += 1
            row.last_error = text[:2000]
            if final or row.attempts >= MAX_ATTEMPTS:
                row.status = CertificateStatus.FAILED
                session.add(OrganiserNotification(
                    district=row.district, participant_id=row.participant_id,
                    kind=NotificationKind.NOTIFY, created_at=now,
                    text=f"Không cấp được giấy chứng nhận cho {row.name}: {text}",
                ))

    # -- delivery --------------------------------------------------------------------------------

    def verify_url(self, serial: str) -> str:
        return f"{self.base_url}/verify/{serial}"

    def media_url(self, sha256: str, ext: str, *, absolute: bool = False) -> str:
        path = MEDIA_PREFIX + media_name(sha256, ext)
        return self.base_url + path if absolute else path

    async def deliver(self, certificate_id: int) -> None:
        """Hand an issued certificate to the person: into their conversation (once), and by
        e-mail while their channel's messaging window is closed."""
        now = self.clock()
        bundle = self.flows()
        async with self.db.reads() as session:
            row = await session.get(Certificate, certificate_id)
            if row is None or row.status is not CertificateStatus.ISSUED:
                return
            participant = await session.get(Participant, row.participant_id)
            identity = await self._identity(session, row)
        if identity is None or participant is None:
            return
        assert row.serial and row.png_sha256 and row.pdf_sha256
        is_open = window_open(identity.channel, identity.last_inbound_at, now)
        if row.chat_sent_at is None:
            data = (
                ("campaign", row.campaign),
                ("serial", row.serial),
                ("image", self.media_url(row.png_sha256, "png")),
                ("file", self.media_url(row.pdf_sha256, "pdf")),
                ("pdf_url", self.media_url(row.pdf_sha256, "pdf", absolute=True)),
                ("verify", self.verify_url(row.serial)),
                *((("badge", self.media_url(row.badge_sha256, "png")),)
                  if row.badge_sha256 else ()),
            )
            await self.notify(Inbound(
                district=identity.district, channel=identity.channel, user_id=identity.user_id,
                kind=InboundKind.SYSTEM, message_id=f"certificate:{row.id}", timestamp=now,
                payload=SYSTEM_CERTIFICATE, data=data,
            ))
            async with self.db.sessions() as session, session.begin():
                values: dict[str, Any] = {"chat_sent_at": now}
                if is_open:
                    values.update(delivered_via="chat", delivered_at=now)
                await session.execute(update(Certificate).where(Certificate.id == row.id)
                                      .values(**values))
        if is_open or row.emailed_at is not None or row.email_attempts >= MAX_EMAIL_ATTEMPTS:
            return
        address = participant.email
        if not address or self.smtp is None:
            return  # the chat has it, deferred until they write again
        await self._email(row, participant, address, bundle, now)

    async def _identity(self, session: Any, row: Certificate) -> ChannelIdentity | None:
        if row.identity_id is not None:
            found = await session.get(ChannelIdentity, row.identity_id)
            if found is not None:
                return found  # type: ignore[no-any-return]
        identities = (await session.scalars(
            select(ChannelIdentity).where(ChannelIdentity.participant_id == row.participant_id)
        )).all()
        if not identities:
            return None
        return max(identities, key=lambda i: (i.last_inbound_at is not None,  # type: ignore[no-any-return]
                                             i.last_inbound_at, i.id))

    async def _email(
        self, row: Certificate, participant: Participant, address: str,
        bundle: CompiledBundle, now: datetime,
    ) -> None:
        from bots.certificates.render import RenderedCertificate

        assert self.smtp is not None and row.png_sha256 and row.pdf_sha256 and row.serial
        png, pdf = await asyncio.gather(asyncio.to_thread(self.files.read, row.png_sha256),
                                        asyncio.to_thread(self.files.read, row.pdf_sha256))
        badge = (await asyncio.to_thread(self.files.read, row.badge_sha256)
                 if row.badge_sha256 else None)
        campaign = bundle.campaigns.get(row.campaign)
        title = campaign.title if campaign is not None else row.campaign
        attachments = attachments_for(
            profile_name(participant.profile or {}) or row.name,
            RenderedCertificate(png=png, pdf=pdf), badge, badge_title=badge_title(title),
        )
        organisation = bundle.district(row.district).name or None
        try:
            message_id = await send_certificate_mail(
                self.smtp, address, row.name, title, attachments, self.verify_url(row.serial),
                organisation=organisation,
            )
        except MailError as error:
            final = not error.retry or row.email_attempts + 1 >= MAX_EMAIL_ATTEMPTS
            log.warning("certificate %d: e-mail not sent (%s): %s", row.id,
                        type(error).__name__, error)
            async with self.db.sessions() as session, session.begin():
                await session.execute(
                    update(Certificate).where(Certificate.id == row.id).values(
                        email_attempts=MAX_EMAIL_ATTEMPTS if final else row.email_attempts + 1,
                        email_error=str(error)[:2000],
                    )
                )
                if final:
                    session.add(OrganiserNotification(
                        district=row.district, participant_id=row.participant_id,
                        kind=NotificationKind.UNDELIVERED, created_at=now,
                        text=(f"Không gửi được giấy chứng nhận {row.serial} qua e-mail tới "
                              f"{address}: {error} Người tham gia sẽ nhận trong khung chat khi "
                              "họ nhắn lại."),
                    ))
            return
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Certificate).where(Certificate.id == row.id).values(
                    emailed_at=now, email_message_id=message_id[:255], email_error=None,
                    delivered_via="email", delivered_at=now,
                )
            )
            session.add(AuditEntry(at=now, actor="bot", action="certificate_emailed",
                                   participant_id=row.participant_id,
                                   detail={"certificate": row.id}))
        log.info("certificate %d e-mailed", row.id)

    async def forget_erased(self) -> int:
        """Delete the files of certificates revoked by a deletion of personal data."""
        async with self.db.reads() as session:
            rows = (await session.execute(
                select(Certificate.id, Certificate.png_sha256, Certificate.pdf_sha256,
                       Certificate.badge_sha256)
                .where(Certificate.status == CertificateStatus.REVOKED,
                       or_(Certificate.png_sha256.is_not(None),
                           Certificate.pdf_sha256.is_not(None),
                           Certificate.badge_sha256.is_not(None)))
                .limit(BATCH)
            )).all()
        for certificate_id, *hashes in rows:
            for sha in hashes:
                if sha:
                    await self.files.delete_async(sha)
            async with self.db.sessions() as session, session.begin():
                await session.execute(
                    update(Certificate).where(Certificate.id == certificate_id)
                    .values(png_sha256=None, pdf_sha256=None, badge_sha256=None)
                )
        return len(rows)

    # -- approvals outside the window ----------------------------------------------------------

    async def prepare_approval(self, inbound: Inbound) -> Inbound:
        """An approval reaching a person whose messaging window is closed: the name question
        could not reach them (platforms forbid writing first), so the engine is told to issue
        with the registered name at once (data `confirm=0`); it is e-mailed, and the chat gets
        it when they write again. Other events pass unchanged."""
        if inbound.kind is not InboundKind.SYSTEM or inbound.payload != SYSTEM_APPROVE:
            return inbound
        async with self.db.reads() as session:
            last = await session.scalar(
                select(ChannelIdentity.last_inbound_at).where(
                    ChannelIdentity.district == inbound.district,
                    ChannelIdentity.channel == inbound.channel,
                    ChannelIdentity.user_id == inbound.user_id,
                )
            )
        if window_open(inbound.channel, last, self.clock()):
            return inbound
        data = tuple(pair for pair in inbound.data if pair[0] != "confirm")
        return Inbound(
            district=inbound.district, channel=inbound.channel, user_id=inbound.user_id,
            kind=inbound.kind, message_id=inbound.message_id, timestamp=inbound.timestamp,
            text=inbound.text, payload=inbound.payload, ref=inbound.ref,
            attachments=inbound.attachments, data=(*data, ("confirm", "0")),
        )


__all__ = [
    "MEDIA_TYPES",
    "CertificateService",
    "badge_title",
    "certificate_files",
    "local_date",
    "media_name",
    "media_path",
]
