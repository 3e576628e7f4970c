"""The outbox delivery policy: messaging windows, rate limits, retries, final failures.

The pipeline's sender (bots/pipeline.py, `Pipeline.deliver`) asks this module four things:

- `window_open(channel, last_inbound_at, now)`: may the bot write to this person now?
  Messenger 24 h, Zalo OA 48 h (free customer-service messages) after the person's last message;
  Telegram, the Zalo Bot API (undocumented: treated as none), the browser and the terminal have
  no window. Outside it the message is not attempted: it waits until the person writes again.
- `buckets(adapter, key)`: which rate-limit buckets a send uses (bots/ratelimit.py): one per
  credential — a Messenger Page, a Zalo *app* (Zalo's limit is per app, shared by its OAs), a
  Telegram bot, a Zalo Bot — plus, on Telegram and Zalo Bot, one per chat.
- `DeliveryPolicy.retry(...)`: after `RetryLater` or `AuthExpired`, how long to wait (the
  platform's `retry_after` when it gives one, else exponential backoff with jitter) and why.
- `record_undelivered(...)`: a final failure (unreachable, configuration, bad request) becomes
  an `OrganiserNotification` on the person's page in the console: nothing is dropped silently.

Decisions and their reasons are in docs/delivery.md.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import (
    AdapterError,
    AuthExpired,
    BadRequest,
    ConfigurationError,
    RecipientUnreachable,
)
from bots.ratelimit import Buckets, Rate
from flows.vocab import Channel, ConversationKey, Outbound

Sessions = async_sessionmaker[AsyncSession]

# -- messaging windows ---------------------------------------------------------------------------

WINDOWS: Mapping[Channel, timedelta] = {
    Channel.MESSENGER: timedelta(hours=24),  # channels.md §1.4: standard messaging window
    Channel.ZALO: timedelta(hours=48),  # channels.md §2.4: free cs messages (billed to 7 days)
}


def window_open(channel: Channel, last_inbound_at: datetime | None, now: datetime) -> bool:
    """True when the channel lets the bot write to a person who last wrote at
    `last_inbound_at` (None: never, on record)."""
    window = WINDOWS.get(channel)
    if window is None:
        return True
    return last_inbound_at is not None and now - last_inbound_at < window


# -- rate limits ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    credential: Rate  # per Page / Zalo app / bot
    chat: Rate | None = None  # per recipient, where the platform throttles one chat


LIMITS: Mapping[Channel, Limits] = {
    # Meta: 300 Send API calls/s per Page (channels.md §1.3); headroom for setup calls.
    Channel.MESSENGER: Limits(Rate(250, 50)),
    # Zalo OA: 4,000 requests/minute per app, shared by every OA of the app (§2.3).
    Channel.ZALO: Limits(Rate(60, 20)),
    # Telegram: ~30 messages/s per bot, ~1/s in one chat with short bursts tolerated (§4.4).
    Channel.TELEGRAM: Limits(Rate(30, 30), Rate(1, 3)),
    # Zalo Bot: undocumented (§3.4); a Telegram-like API, so Telegram's figures.
    Channel.ZALOBOT: Limits(Rate(30, 30), Rate(1, 3)),
}


def credential(adapter: Any, key: ConversationKey) -> str:
    """The id of the credential a send to `key` uses: an adapter's own `credential(key)` if
    it has one; a Messenger Page id; a Zalo app id; else the district (Telegram and Zalo Bot
    have one bot per district)."""
    own = getattr(adapter, "credential", None)
    if callable(own):
        return str(own(key))
    if key.channel is Channel.MESSENGER:
        for page in getattr(adapter, "pages", ()):
            if getattr(page, "district", None) == key.district:
                return str(page.page_id)
    if key.channel is Channel.ZALO:
        app_id = getattr(adapter, "app_id", None)
        if app_id:
            return str(app_id)
    return key.district


def buckets(adapter: Any, key: ConversationKey) -> tuple[str, Buckets] | None:
    """(group, buckets) for the limiter, or None when the channel has no limit."""
    limits = LIMITS.get(key.channel)
    if limits is None:
        return None
    group = f"{key.channel.value}:{credential(adapter, key)}"
    chosen: list[tuple[str, Rate]] = [("", limits.credential)]
    if limits.chat is not None:
        chosen.append((f":c:{key.user_id}", limits.chat))
    return group, chosen


# -- retries -------------------------------------------------------------------------------------


class DeferReason(enum.Enum):
    """Why an outbox item waits (stored with its deferral)."""

    RETRY = "retry"  # our own backoff after a failure: a new turn of the person tries at once
    WAIT = "wait"  # the platform's retry_after, or a rate limit: always honoured
    AUTH = "auth"  # credentials were refused and are being refreshed
    WINDOW = "window"  # outside the messaging window: until the person writes again

    @classmethod
    def of(cls, text: str) -> DeferReason:
        try:
            return cls(text.partition(":")[0])
        except ValueError:
            return cls.RETRY

    def stored(self, parts_done: int = 0) -> str:
        """The deferral's stored reason: this one, plus the parts of a multi-part message
        already delivered (`retry:2`), so the retry resumes after them. The stores keep the
        reason as an opaque word."""
        return f"{self.value}:{parts_done}" if parts_done > 0 else self.value


def parts_done(reason: str) -> int:
    """The delivered parts a stored reason carries (`DeferReason.stored`); 0 when none."""
    _, _, count = reason.partition(":")
    return int(count) if count.isdigit() else 0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    attempts: int = 3  # tries in one go (waits up to `max_wait` slept) before deferring
    backoff: float = 0.5  # seconds before the second try, doubled per failed try
    max_wait: float = 2.0  # the longest wait slept in place; longer ones are deferred durably
    max_delay: float = 600.0  # backoff cap: a message is retried at least every 10 minutes
    auth_delay: float = 2.0  # seconds before retrying after the credentials were refused
    jitter: float = 0.5  # fraction of each backoff delay drawn at random
    lease: float = 30.0  # the sender lease on stores several processes share
    busy_retry: float = 1.0  # look again this soon when another process is sending

    def retry(
        self, attempts: int, error: AdapterError, rng: random.Random | None = None
    ) -> tuple[float, DeferReason]:
        """Seconds to wait after the `attempts`-th failed try ended in `error`, and why."""
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            # The platform said how long: wait exactly that, a little more never hurts.
            return float(retry_after) * (1.0 + 0.05 * (rng or random).random()), DeferReason.WAIT
        auth = isinstance(error, AuthExpired)
        base = self.auth_delay if auth else self.backoff
        delay = min(self.max_delay, base * 2 ** min(max(attempts - 1, 0), 30))
        delay *= 1.0 - self.jitter * (rng or random).random()  # "equal jitter" family
        return delay, DeferReason.AUTH if auth else DeferReason.RETRY


# -- final failures, for organisers --------------------------------------------------------------

CHANNEL_NAMES: Mapping[Channel, str] = {
    Channel.MESSENGER: "Messenger",
    Channel.ZALO: "Zalo OA",
    Channel.ZALOBOT: "Zalo Bot",
    Channel.TELEGRAM: "Telegram",
    Channel.WEBCHAT: "trò chuyện trên web",
    Channel.CONSOLE: "dòng lệnh",
}

_WHY: tuple[tuple[type[AdapterError], str], ...] = (
    (RecipientUnreachable, "người nhận đã chặn, bỏ quan tâm hoặc không còn nhận tin"),
    (ConfigurationError, "cấu hình kênh cần được sửa (token, quyền hoặc gói dịch vụ)"),
    (BadRequest, "nền tảng từ chối nội dung tin nhắn"),
)
EXCERPT = 120  # characters of the undelivered message quoted to organisers


def undelivered_text(key: ConversationKey, message: Outbound, error: AdapterError) -> str:
    """What organisers read about a message that will never be delivered (Vietnamese)."""
    why = next((text for cls, text in _WHY if isinstance(error, cls)), "lỗi không rõ")
    quoted = " ".join(message.text.split())
    if len(quoted) > EXCERPT:
        quoted = quoted[: EXCERPT - 1].rstrip() + "…"
    if not quoted:
        quoted = "(ảnh hoặc tệp)" if message.image or message.file else "(trống)"
    channel = CHANNEL_NAMES.get(key.channel, key.channel.value)
    detail = str(error).strip()
    text = f"Không gửi được tin nhắn qua {channel}: {why}. Tin nhắn: «{quoted}»."
    return f"{text} Chi tiết: {detail}" if detail else text


async def last_inbound_at(sessions: Sessions, key: ConversationKey) -> datetime | None:
    """When the person last wrote on this channel (the records' `ChannelIdentity`)."""
    from bots.records.models import ChannelIdentity

    async with sessions() as session:
        return await session.scalar(
            select(ChannelIdentity.last_inbound_at).where(
                ChannelIdentity.district == key.district,
                ChannelIdentity.channel == key.channel,
                ChannelIdentity.user_id == key.user_id,
            )
        )


async def record_undelivered(
    sessions: Sessions,
    key: ConversationKey,
    message: Outbound,
    error: AdapterError,
    now: datetime,
) -> None:
    """Write the final failure as an organiser notification of the person's district (on
    their participant page when the records know them)."""
    from bots.records.models import ChannelIdentity, NotificationKind, OrganiserNotification

    async with sessions() as session, session.begin():
        participant_id = await session.scalar(
            select(ChannelIdentity.participant_id).where(
                ChannelIdentity.district == key.district,
                ChannelIdentity.channel == key.channel,
                ChannelIdentity.user_id == key.user_id,
            )
        )
        session.add(
            OrganiserNotification(
                district=key.district,
                participant_id=participant_id,
                kind=NotificationKind.UNDELIVERED,
                text=undelivered_text(key, message, error),
                created_at=now,
            )
        )


__all__ = [
    "CHANNEL_NAMES",
    "LIMITS",
    "WINDOWS",
    "DeferReason",
    "DeliveryPolicy",
    "Limits",
    "buckets",
    "credential",
    "last_inbound_at",
    "record_undelivered",
    "undelivered_text",
    "window_open",
]
