"""Finding one's certificates again (/chung-nhan): phone number, then a one-time code.

A person types the phone number they registered with. If certificates were issued to it, a
6-digit code goes to them — in the chat they used, while its messaging window is open (a SYSTEM
"say" event through the inbox), else by e-mail to the registered address — and the page asks
for it. The right code, within 10 minutes and 5 attempts, lists their certificates with links.

The page answers the same whether or not the number has certificates (no one learns who took
part); only the code's hash is stored; codes are one-time. Limits: 3 codes per number and 10
requests per address per hour (rows of `certificate_codes`, so every process counts them).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from sqlalchemy import func, select, update

from bots.certificates.mail import SmtpSettings
from bots.delivery import window_open
from bots.records.db import Database
from bots.records.models import (
    Certificate,
    CertificateCode,
    CertificateStatus,
    ChannelIdentity,
    Participant,
)
from flows.validators import Valid, parse_phone
from flows.vocab import Inbound, InboundKind

log = logging.getLogger("loa.certificates.lookup")

Notify = Callable[[Inbound], Awaitable[Any]]

CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=10)
MAX_ATTEMPTS = 5
PER_PHONE = 3  # codes per number per hour
PER_ADDRESS = 10  # requests per client address per hour
WINDOW = timedelta(hours=1)
SAY = "say"  # bots.takeover.SAY

CODE_TEXT = (
    "Mã tra cứu giấy chứng nhận của bạn là {code} (dùng được trong 10 phút). "
    "Nếu bạn không yêu cầu, hãy bỏ qua tin nhắn này."
)


class LookupRefused(Exception):
    """A request refused; `str(error)` is for the person (Vietnamese)."""


def normal_phone(text: str) -> str | None:
    """A Vietnamese phone number as E.164 (how registration saved it), or None."""
    result = parse_phone(text[:40])
    return result.value if isinstance(result, Valid) else None


def code_hash(phone: str, code: str) -> str:
    return hashlib.sha256(f"{phone}:{code}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Sent:
    """What happened to a code request (the page says the same in every case)."""

    via: str | None  # "chat", "email", or None (nothing to send, or no way to send it)


async def _certificate_holders(session: Any, phone: str) -> list[Participant]:
    return list((await session.scalars(
        select(Participant)
        .where(
            Participant.phone == phone,
            Participant.deleted_at.is_(None),
            Participant.id.in_(
                select(Certificate.participant_id).where(
                    Certificate.status == CertificateStatus.ISSUED
                )
            ),
        )
        .order_by(Participant.id)
    )).all())


async def request_code(
    db: Database,
    phone: str,
    ip: str,
    now: datetime,
    notify: Notify,
    smtp: SmtpSettings | None,
) -> Sent:
    """Send a code to the holder of `phone` (E.164) if they have certificates. Raises
    `LookupRefused` when a limit is reached."""
    async with db.reads() as session:
        since = now - WINDOW
        by_address = int(await session.scalar(
            select(func.count()).select_from(CertificateCode)
            .where(CertificateCode.ip == ip, CertificateCode.created_at > since)
        ) or 0)
        by_phone = int(await session.scalar(
            select(func.count()).select_from(CertificateCode)
            .where(CertificateCode.phone == phone, CertificateCode.created_at > since)
        ) or 0)
        if by_address >= PER_ADDRESS or by_phone >= PER_PHONE:
            raise LookupRefused(
                "Bạn đã yêu cầu mã quá nhiều lần. Bạn thử lại sau một giờ nhé."
            )
        holders = await _certificate_holders(session, phone)
        identities = list((await session.scalars(
            select(ChannelIdentity).where(
                ChannelIdentity.participant_id.in_([p.id for p in holders])
            )
        )).all()) if holders else []
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    # Nobody holding certificates: a row all the same (it counts towards the limits), with the
    # hash of a code that was never sent.
    async with db.sessions() as session, session.begin():
        row = CertificateCode(
            phone=phone,
            code_hash=code_hash(phone, code if holders else secrets.token_hex(16)),
            created_at=now,
            expires_at=now + CODE_TTL,
            attempts=0,
            ip=ip[:64],
            sent_via=None,
        )
        session.add(row)
        await session.flush()
        row_id = row.id
    if not holders:
        return Sent(None)
    via = await _send(row_id, code, holders, identities, now, notify, smtp)
    if via is not None:
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(CertificateCode).where(CertificateCode.id == row_id).values(sent_via=via)
            )
    return Sent(via)


async def _send(
    row_id: int,
    code: str,
    holders: list[Participant],
    identities: list[ChannelIdentity],
    now: datetime,
    notify: Notify,
    smtp: SmtpSettings | None,
) -> str | None:
    open_ = [i for i in identities if window_open(i.channel, i.last_inbound_at, now)]
    if open_:
        latest = max(open_, key=lambda i: (i.last_inbound_at is not None, i.last_inbound_at))
        await notify(Inbound(
            district=latest.district, channel=latest.channel, user_id=latest.user_id,
            kind=InboundKind.SYSTEM, message_id=f"lookup-code:{row_id}", timestamp=now,
            payload=SAY, data=(("text", CODE_TEXT.format(code=code)),),
        ))
        return "chat"
    address = next((p.email for p in holders if p.email), None)
    if address and smtp is not None:
        try:
            await send_code_mail(smtp, address, code)
            return "email"
        except Exception as error:  # the person sees the same page; they can ask again
            log.warning("look-up code not e-mailed: %s", type(error).__name__)
    return None


async def send_code_mail(smtp: SmtpSettings, to: str, code: str) -> None:
    import aiosmtplib

    display, sender = smtp.sender_address()
    message = EmailMessage()
    message["Subject"] = "Mã tra cứu giấy chứng nhận"
    message["From"] = f"{display} <{sender}>" if display else sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(CODE_TEXT.format(code=code) + "\n", charset="utf-8")
    from bots.certificates.mail import TlsMode

    await aiosmtplib.send(
        message, sender=sender, recipients=[to], hostname=smtp.host, port=smtp.port,
        username=smtp.user, password=smtp.password, use_tls=smtp.tls is TlsMode.SSL,
        start_tls=smtp.tls is TlsMode.STARTTLS, timeout=smtp.timeout,
    )


async def check_code(db: Database, phone: str, code: str, now: datetime) -> list[Certificate]:
    """The certificates of `phone` when `code` is its latest unexpired code (used up by this
    call). Raises `LookupRefused` otherwise (each wrong try counts)."""
    code = "".join(ch for ch in code if ch.isdigit())[:CODE_DIGITS]
    refusal: str | None = None
    async with db.sessions() as session, session.begin():  # a wrong try is counted (committed)
        row = await session.scalar(
            select(CertificateCode)
            .where(CertificateCode.phone == phone, CertificateCode.used_at.is_(None),
                   CertificateCode.expires_at > now)
            .order_by(CertificateCode.id.desc())
            .limit(1)
        )
        if row is None or row.attempts >= MAX_ATTEMPTS:
            refusal = "Mã đã hết hạn hoặc đã dùng. Bạn yêu cầu mã mới nhé."
        elif len(code) != CODE_DIGITS or not hmac.compare_digest(
            row.code_hash, code_hash(phone, code)
        ):
            row.attempts += 1
            left = MAX_ATTEMPTS - row.attempts
            refusal = (
                f"Mã chưa đúng. Bạn còn {left} lần thử." if left > 0
                else "Sai mã quá nhiều lần. Bạn yêu cầu mã mới nhé."
            )
        else:
            row.used_at = now
    if refusal is not None:
        raise LookupRefused(refusal)
    async with db.reads() as session:
        holders = await _certificate_holders(session, phone)
        if not holders:
            return []
        return list((await session.scalars(
            select(Certificate)
            .where(Certificate.participant_id.in_([p.id for p in holders]),
                   Certificate.status == CertificateStatus.ISSUED)
            .order_by(Certificate.id)
        )).all())


__all__ = [
    "CODE_TTL",
    "LookupRefused",
    "Sent",
    "check_code",
    "code_hash",
    "normal_phone",
    "request_code",
    "send_code_mail",
]
