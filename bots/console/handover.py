"""Hand-over: an organiser takes a conversation from the bot, writes to the person, hands back.

Taking marks the person's channel identities paused (the record organisers see) and sends a
"pause" SYSTEM event into each conversation, so the engine stops answering; handing back
clears it and sends "resume" (the engine says the assistant is back and repeats its question).
Messages typed in the console go to the person through `send` (the outbox of that
conversation). A hand-over nobody has touched for the configured time (LOA_HANDOVER_TIMEOUT,
2 hours by default) goes back to the bot on its own: `release_stale_handovers`, called every
minute by the runtime.

A person who asked for a human (the flow's `action: handover`) is already paused; an organiser
takes that over the same way. Such a request no one has taken stays paused (and listed).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bots.console import audit
from bots.console.review import system_inbound
from bots.records.db import Database
from bots.records.models import (
    ChannelIdentity,
    Handover,
    NotificationKind,
    Organiser,
    OrganiserNotification,
    Participant,
)
from flows.vocab import ConversationKey, Inbound, InboundKind, NoticeKind, Outbound

log = logging.getLogger("loa.console.handover")

Notify = Callable[[Inbound], Awaitable[Any]]
Send = Callable[[ConversationKey, Outbound], Awaitable[Any]]

SYSTEM_PAUSE = "pause"
SYSTEM_RESUME = "resume"
DEFAULT_TIMEOUT = timedelta(hours=2)
MAX_MESSAGE = 2000
TIMEOUT_ACTOR = "timeout"


class HandoverError(Exception):
    """Cannot be done now; `str(error)` is for the organiser (Vietnamese)."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a take or release did, and the events to send once it is committed."""

    events: tuple[Inbound, ...]
    handovers: tuple[int, ...]


def key_of(identity: ChannelIdentity) -> ConversationKey:
    return ConversationKey(identity.district, identity.channel, identity.user_id)


async def identities_of(session: AsyncSession, participant_id: int) -> list[ChannelIdentity]:
    return list(
        (
            await session.scalars(
                select(ChannelIdentity)
                .where(ChannelIdentity.participant_id == participant_id)
                .order_by(ChannelIdentity.id)
            )
        ).all()
    )


async def open_handovers(session: AsyncSession, identity_ids: list[int]) -> list[Handover]:
    if not identity_ids:
        return []
    return list(
        (
            await session.scalars(
                select(Handover).where(
                    Handover.identity_id.in_(identity_ids), Handover.released_at.is_(None)
                )
            )
        ).all()
    )


async def take(
    session: AsyncSession,
    organiser: Organiser,
    participant: Participant,
    now: datetime,
    *,
    ip: str | None = None,
) -> Change:
    """Pause the bot for every channel of this person (inside the caller's transaction)."""
    identities = await identities_of(session, participant.id)
    if not identities:
        raise HandoverError("Người này chưa trò chuyện qua kênh nào.")
    current = {h.identity_id: h for h in await open_handovers(session, [i.id for i in identities])}
    events: list[Inbound] = []
    ids: list[int] = []
    for identity in identities:
        handover = current.get(identity.id)
        if handover is not None:
            handover.organiser_id = organiser.id
            handover.last_activity_at = now
            ids.append(handover.id)
            continue
        identity.paused = True
        handover = Handover(
            identity_id=identity.id,
            organiser_id=organiser.id,
            taken_at=now,
            last_activity_at=now,
        )
        session.add(handover)
        await session.flush()
        ids.append(handover.id)
        events.append(
            system_inbound(identity, SYSTEM_PAUSE, f"handover:{handover.id}:take", now)
        )
    # The person's own request for a human is being answered.
    await session.execute(
        update(OrganiserNotification)
        .where(
            OrganiserNotification.participant_id == participant.id,
            OrganiserNotification.kind == NotificationKind.HANDOVER,
            OrganiserNotification.handled_at.is_(None),
        )
        .values(handled_at=now)
    )
    audit.record(
        session, organiser, audit.HANDOVER_TAKEN, now, participant_id=participant.id, ip=ip
    )
    return Change(tuple(events), tuple(ids))


async def _release_identities(
    session: AsyncSession,
    identities: list[ChannelIdentity],
    handovers: list[Handover],
    now: datetime,
    by: str,
) -> list[Inbound]:
    events: list[Inbound] = []
    open_by_identity = {h.identity_id: h for h in handovers}
    for identity in identities:
        handover = open_by_identity.get(identity.id)
        if handover is not None:
            handover.released_at = now
            handover.released_by = by
        if not identity.paused and handover is None:
            continue
        identity.paused = False
        tag = handover.id if handover is not None else f"i{identity.id}"
        events.append(
            system_inbound(
                identity, SYSTEM_RESUME, f"handover:{tag}:release:{int(now.timestamp())}", now
            )
        )
    return events


async def release(
    session: AsyncSession,
    organiser: Organiser,
    participant: Participant,
    now: datetime,
    *,
    ip: str | None = None,
) -> Change:
    """Hand every channel of this person back to the bot (inside the caller's transaction)."""
    identities = await identities_of(session, participant.id)
    handovers = await open_handovers(session, [i.id for i in identities])
    if not handovers and not any(i.paused for i in identities):
        raise HandoverError("Trợ lý tự động đang trả lời người này rồi.")
    events = await _release_identities(
        session, identities, handovers, now, audit.actor_of(organiser)
    )
    await session.execute(
        update(OrganiserNotification)
        .where(
            OrganiserNotification.participant_id == participant.id,
            OrganiserNotification.kind == NotificationKind.HANDOVER,
            OrganiserNotification.handled_at.is_(None),
        )
        .values(handled_at=now)
    )
    audit.record(
        session, organiser, audit.HANDOVER_RELEASED, now, participant_id=participant.id, ip=ip
    )
    return Change(tuple(events), tuple(h.id for h in handovers))


async def message(
    session: AsyncSession,
    organiser: Organiser,
    participant: Participant,
    text: str,
    now: datetime,
    *,
    ip: str | None = None,
) -> list[ConversationKey]:
    """Check and log a console message; returns where to send it (the conversation the
    person wrote in last). Only while the conversation is taken over: otherwise the bot and
    the organiser would talk over each other."""
    text = text.strip()
    if not text:
        raise HandoverError("Tin nhắn đang trống.")
    if len(text) > MAX_MESSAGE:
        raise HandoverError(f"Tin nhắn dài quá {MAX_MESSAGE} ký tự.")
    identities = await identities_of(session, participant.id)
    handovers = await open_handovers(session, [i.id for i in identities])
    if not handovers:
        raise HandoverError("Hãy bấm “Nhận hỗ trợ trực tiếp” trước khi nhắn tin.")
    taken = {h.identity_id for h in handovers}
    for handover in handovers:
        handover.last_activity_at = now
    targets = [i for i in identities if i.id in taken]
    target = max(targets, key=lambda i: (i.last_inbound_at is not None, i.last_inbound_at, i.id))
    audit.record(
        session,
        organiser,
        audit.HANDOVER_MESSAGE,
        now,
        participant_id=participant.id,
        ip=ip,
        channel=target.channel.value,
        length=len(text),
    )
    return [key_of(target)]


def console_message(text: str) -> Outbound:
    return Outbound(text.strip(), notice=NoticeKind.SYSTEM)


SYSTEM_SAY = "say"


def say_inbound(key: ConversationKey, message: Outbound, now: datetime) -> Inbound:
    """An organiser's message as a SYSTEM "say" event for the conversation's inbox (for a
    runtime whose engine answers "say" with `Outbound(text, notice=SYSTEM)`): it then reaches
    the person in order with the bot's replies, through the normal sender."""
    return Inbound(
        district=key.district,
        channel=key.channel,
        user_id=key.user_id,
        kind=InboundKind.SYSTEM,
        message_id=f"console:say:{uuid.uuid4().hex}",
        timestamp=now,
        payload=SYSTEM_SAY,
        data=(("text", message.text),),
    )


def send_through_inbox(notify: Notify, clock: Callable[[], datetime]) -> Send:
    """A `ConsoleDeps.send` that enters "say" events through `notify` (the pipeline's ingest)."""

    async def send(key: ConversationKey, message: Outbound) -> None:
        await notify(say_inbound(key, message, clock()))

    return send


async def send_events(notify: Notify, events: tuple[Inbound, ...] | list[Inbound]) -> bool:
    """Enter the events into their conversations' inboxes; False if any could not be."""
    ok = True
    for event in events:
        try:
            await notify(event)
        except Exception:
            log.exception("could not send %s to a conversation", event.payload)
            ok = False
    return ok


async def release_stale_handovers(
    db: Database,
    notify: Notify,
    now: datetime,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> int:
    """Hand back to the bot every conversation an organiser took over and left quiet for
    `timeout`; returns how many were released. The runtime calls this every minute."""
    cutoff = now - timeout
    async with db.reads() as session:
        stale = list(
            (
                await session.scalars(
                    select(Handover.id).where(
                        Handover.released_at.is_(None), Handover.last_activity_at <= cutoff
                    )
                )
            ).all()
        )
    released = 0
    for handover_id in stale:
        async with db.sessions() as session, session.begin():
            handover = await session.get(Handover, handover_id)
            if (
                handover is None
                or handover.released_at is not None
                or handover.last_activity_at > cutoff
            ):
                continue
            identity = await session.get(ChannelIdentity, handover.identity_id)
            if identity is None:
                continue
            events = await _release_identities(session, [identity], [handover], now,
                                               TIMEOUT_ACTOR)
            audit.record(
                session,
                None,
                audit.HANDOVER_RELEASED,
                now,
                participant_id=identity.participant_id,
                reason=TIMEOUT_ACTOR,
                handover=handover.id,
            )
        await send_events(notify, events)
        released += 1
    return released


__all__ = [
    "DEFAULT_TIMEOUT",
    "SYSTEM_PAUSE",
    "SYSTEM_RESUME",
    "SYSTEM_SAY",
    "Change",
    "HandoverError",
    "console_message",
    "identities_of",
    "key_of",
    "message",
    "open_handovers",
    "release",
    "release_stale_handovers",
    "say_inbound",
    "send_events",
    "send_through_inbox",
    "take",
]
