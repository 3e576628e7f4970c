"""A person answered from the Page inbox or the OA chat: the bot steps back for that user.

Messenger and Zalo OA echo every message the Page/OA sends, the bot's and a human's alike. An
echo that is not the bot's own means an organiser is talking to the person; the bot must not
talk over them. The webhook then enters a SYSTEM "pause" event into that conversation's inbox
(durably, like any inbound, de-duplicated by the echo's message id). The engine keeps the
session paused (silent) until an organiser hands the conversation back (SYSTEM "resume", sent by
the console's hand-over page), and the records show the person as waiting for a human
(`HandoverRequested`: the identity is marked paused and organisers get a hand-over notice).

`flows.engine` knows "resume" but not "pause" (its own pause is the flow's `action: handover`),
so `TakeoverEngine` wraps the engine and handles "pause" here; every other inbound goes to the
engine unchanged. The console's own "pause" (an organiser took the conversation over) is handled
the same way, without a second notice: the console recorded the hand-over itself.

Recognising the bot's own echoes (docs/channels.md, "Echoes"):
- Messenger: every send carries metadata `outbox:<id>` (adapters.messenger), so its echo is known
  by content, even when it arrives before the send call returned.
- Zalo OA: the message id Zalo returns is recorded durably (`ChannelState.record_sent`, shared by
  all processes). One carrying `admin_id` is a person at once. An echo whose id is not recorded
  yet may be of a send still in flight: it is kept in the records (`ChannelState.hold_echo`,
  table `pending_echoes`) before the webhook is acknowledged, then judged after `ZALO_GRACE`
  seconds — a pause if still not the bot's own, else dropped. The receiving process judges it
  in a task; every process with Zalo also sweeps the kept echoes older than the grace, at start
  and every `ZALO_SWEEP_EVERY` seconds, so an echo whose process was killed or stopped during
  the grace is judged anyway (`bots.channels.Channels.sweep_zalo_echoes`). Two judges of one
  echo pause once: the pause is de-duplicated by the echo's id, and the kept row is deleted
  only after the pause is stored.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flows.engine import Turn
from flows.events import HandoverRequested
from flows.session import Session
from flows.vocab import Channel, Inbound, InboundKind, NoticeKind, Outbound

log = logging.getLogger("loa.takeover")

PAUSE = "pause"
SAY = "say"  # an organiser's message from the console (bots.console.handover.say_inbound)
SOURCE_ECHO = "echo"
ZALO_GRACE = 3.0  # seconds: Zalo's echo may arrive before its send call returns (~2 s seen)
ZALO_SWEEP_EVERY = 30.0  # seconds between sweeps of echoes a dead process left unjudged

REASONS = {
    Channel.MESSENGER: (
        "Quản trị viên Trang đã nhắn trực tiếp với người này trong Hộp thư của Trang, nên bot "
        "tạm dừng với họ. Trao lại cho bot khi đã trao đổi xong."
    ),
    Channel.ZALO: (
        "Cán bộ đã nhắn trực tiếp với người này trong khung chat Zalo OA, nên bot tạm dừng với "
        "họ. Trao lại cho bot khi đã trao đổi xong."
    ),
}


def pause_inbound(
    district: str, channel: Channel, user_id: str, echo_id: str, timestamp: datetime
) -> Inbound:
    """The SYSTEM event a human's echo enters into the conversation's inbox. Its message id is
    derived from the echo's, so a retried webhook pauses once."""
    return Inbound(
        district=district,
        channel=channel,
        user_id=user_id,
        kind=InboundKind.SYSTEM,
        message_id=f"echo:{echo_id}",
        timestamp=timestamp,
        payload=PAUSE,
        data=(("source", SOURCE_ECHO), ("echo", echo_id)),
    )


def pause_turn(session: Session | None, inbound: Inbound) -> Turn:
    """Pause the session (silently). A pause caused by an echo also tells the records, once per
    take-over: the identity is paused and organisers get a hand-over notice."""
    s = session.copy() if session is not None else Session()
    if s.paused:
        return Turn(s, (), ())
    s.paused = True
    events: tuple[HandoverRequested, ...] = ()
    if dict(inbound.data).get("source") == SOURCE_ECHO:
        reason = REASONS.get(inbound.channel, REASONS[Channel.MESSENGER])
        events = (HandoverRequested(reason),)
    return Turn(s, (), events)


class TakeoverEngine:
    """The engine, plus the SYSTEM "pause" event (see the module docstring)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def handle(self, session: Any, inbound: Inbound, now: datetime) -> Any:
        if inbound.kind is InboundKind.SYSTEM and inbound.payload == PAUSE:
            return pause_turn(session, inbound)
        if inbound.kind is InboundKind.SYSTEM and inbound.payload == SAY:
            # Entered through the inbox so it reaches the person in order with the bot's
            # replies, through the same sender (and messaging window) as everything else.
            text = dict(inbound.data).get("text", "").strip()
            out = (Outbound(text, notice=NoticeKind.SYSTEM),) if text else ()
            return Turn(session, out, ())
        return self.engine.handle(session, inbound, now)


__all__ = [
    "PAUSE",
    "REASONS",
    "SAY",
    "SOURCE_ECHO",
    "ZALO_GRACE",
    "ZALO_SWEEP_EVERY",
    "TakeoverEngine",
    "pause_inbound",
    "pause_turn",
]
