"""What channels keep in the records database, shared by every `loa serve` process.

- **Cursors** (`channel_cursors`): small named values that must survive a restart — a Telegram
  long-poll offset (`telegram:<bot id>:offset`), the id of the open notice of a channel problem
  (`notice:<problem>`).
- **Sent message ids** (`sent_messages`): what a platform answered when Loa sent something
  (Zalo OA), so the echo of the bot's own message is recognised in whichever process the
  webhook reaches, not only in the one that sent it. Pruned after `SENT_KEPT`.
- **Pending echoes** (`pending_echoes`): a Zalo OA echo whose id was not recorded as sent when
  it arrived, kept (before the webhook is acknowledged) until some process judges it after the
  grace period: a pause for the person, or dropped as the bot's own (bots/channels.py).
- **Channel notices**: one open `OrganiserNotification` (kind `channel`) per problem a health
  check finds; closed (handled) when the check finds it fixed.

Writes are short transactions; nothing here is held open across a network call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from bots.records.db import Database
from bots.records.models import (
    ChannelCursor,
    NotificationKind,
    OrganiserNotification,
    PendingEcho,
    SentMessage,
)
from flows.vocab import Channel, ConversationKey

log = logging.getLogger("loa.channels")

SENT_KEPT = timedelta(days=2)  # echoes arrive within seconds; two days is generous
# An echo left unjudged this long is dropped unjudged: well before its send's record is pruned
# (after that it would look like a person's), and a pause that late helps no one.
ECHO_KEPT = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class UnjudgedEcho:
    """An echo not yet known to be the bot's own or a person's (a `pending_echoes` row)."""

    channel: Channel
    message_id: str
    key: ConversationKey
    timestamp: datetime  # the platform's time of the message
    seen_at: datetime  # when its webhook arrived


class ChannelState:
    def __init__(self, database: Database) -> None:
        self.db = database

    # -- cursors ------------------------------------------------------------------------------

    async def get(self, name: str) -> str | None:
        async with self.db.reads() as session:
            row = await session.get(ChannelCursor, name)
            return row.value if row is not None else None

    async def put(self, name: str, value: str, now: datetime) -> None:
        async with self.db.sessions() as session, session.begin():
            row = await session.get(ChannelCursor, name)
            if row is None:
                session.add(ChannelCursor(name=name, value=value, updated_at=now))
            else:
                row.value = value
                row.updated_at = now

    # -- sent message ids ---------------------------------------------------------------------

    async def record_sent(
        self, channel: Channel, message_id: str, key: ConversationKey, now: datetime
    ) -> None:
        try:
            async with self.db.sessions() as session, session.begin():
                session.add(
                    SentMessage(
                        channel=channel,
                        message_id=message_id,
                        district=key.district,
                        user_id=key.user_id,
                        sent_at=now,
                    )
                )
        except IntegrityError:
            pass  # recorded already (a retried delivery the platform answered with the same id)

    async def was_sent(self, channel: Channel, message_id: str) -> bool:
        async with self.db.reads() as session:
            row = await session.get(SentMessage, (channel, message_id))
            return row is not None

    async def prune_sent(self, now: datetime) -> int:
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                delete(SentMessage).where(SentMessage.sent_at < now - SENT_KEPT)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- pending echoes -----------------------------------------------------------------------

    async def hold_echo(self, echo: UnjudgedEcho) -> bool:
        """Keep an echo until it is judged. False when it is kept already (a retried webhook,
        or the same echo delivered to two processes)."""
        try:
            async with self.db.sessions() as session, session.begin():
                session.add(
                    PendingEcho(
                        channel=echo.channel,
                        message_id=echo.message_id,
                        district=echo.key.district,
                        user_id=echo.key.user_id,
                        timestamp=echo.timestamp,
                        seen_at=echo.seen_at,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def held_echoes(
        self, channel: Channel, seen_before: datetime, limit: int = 500
    ) -> list[UnjudgedEcho]:
        """The channel's echoes still unjudged that arrived before `seen_before`, oldest
        first."""
        query = (
            select(PendingEcho)
            .where(PendingEcho.channel == channel, PendingEcho.seen_at < seen_before)
            .order_by(PendingEcho.seen_at)
            .limit(limit)
        )
        async with self.db.reads() as session:
            rows = (await session.scalars(query)).all()
        return [
            UnjudgedEcho(
                channel=row.channel,
                message_id=row.message_id,
                key=ConversationKey(row.district, row.channel, row.user_id),
                timestamp=row.timestamp,
                seen_at=row.seen_at,
            )
            for row in rows
        ]

    async def drop_echo(self, channel: Channel, message_id: str) -> bool:
        """The echo is judged: forget it. Only once its pause (if any) is stored, so a process
        dying in between leaves the row for the next judge, whose pause is a duplicate. True
        if this call removed it."""
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                delete(PendingEcho).where(
                    PendingEcho.channel == channel, PendingEcho.message_id == message_id
                )
            )
        return bool(getattr(result, "rowcount", 0))

    async def prune_echoes(self, now: datetime) -> int:
        """Drop echoes left unjudged for `ECHO_KEPT` (see there)."""
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                delete(PendingEcho).where(PendingEcho.seen_at < now - ECHO_KEPT)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- channel notices ----------------------------------------------------------------------

    async def open_notice(self, problem: str, district: str, text: str, now: datetime) -> bool:
        """Make sure one open notice tells organisers about `problem` (a stable key such as
        `messenger:<page id>:subscription`). True when a new notice was created."""
        try:
            return await self._open_notice(f"notice:{problem}", district, text, now)
        except IntegrityError:
            return False  # another process opened it at the same moment

    async def _open_notice(self, name: str, district: str, text: str, now: datetime) -> bool:
        async with self.db.sessions() as session, session.begin():
            cursor = await session.get(ChannelCursor, name)
            if cursor is not None:
                notice = await session.get(OrganiserNotification, int(cursor.value))
                if notice is not None and notice.handled_at is None:
                    return False  # still open: organisers already see it
            notice = OrganiserNotification(
                district=district,
                participant_id=None,
                kind=NotificationKind.CHANNEL,
                text=text,
                created_at=now,
            )
            session.add(notice)
            await session.flush()
            if cursor is None:
                session.add(ChannelCursor(name=name, value=str(notice.id), updated_at=now))
            else:
                cursor.value = str(notice.id)
                cursor.updated_at = now
        return True

    async def close_notice(self, problem: str, now: datetime) -> bool:
        """The problem is gone: mark its open notice handled. True if there was one."""
        name = f"notice:{problem}"
        async with self.db.sessions() as session, session.begin():
            cursor = await session.get(ChannelCursor, name)
            if cursor is None:
                return False
            result = await session.execute(
                update(OrganiserNotification)
                .where(
                    OrganiserNotification.id == int(cursor.value),
                    OrganiserNotification.handled_at.is_(None),
                )
                .values(handled_at=now)
                .execution_options(synchronize_session=False)
            )
            await session.delete(cursor)
        return bool(getattr(result, "rowcount", 0))

    async def open_notices(self, district: str | None = None) -> list[OrganiserNotification]:
        """Open channel notices (for tests and the console)."""
        query = select(OrganiserNotification).where(
            OrganiserNotification.kind == NotificationKind.CHANNEL,
            OrganiserNotification.handled_at.is_(None),
        )
        if district is not None:
            query = query.where(OrganiserNotification.district == district)
        async with self.db.reads() as session:
            return list((await session.scalars(query.order_by(OrganiserNotification.id))).all())


__all__ = ["ECHO_KEPT", "SENT_KEPT", "ChannelState", "UnjudgedEcho"]
