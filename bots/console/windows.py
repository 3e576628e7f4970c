"""Messaging windows: how long after a person's last message a channel lets the bot write.

Messenger allows free-form messages for 24 hours after the person's last message; Zalo OA's
customer-service messages are free for 48 hours (billed up to 7 days); Telegram, the Zalo Bot
API, the browser chat and the terminal have no window. Reviews whose answer must reach the
person are sorted by when their window closes (docs/bang-dieu-khien.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.vocab import Channel

WINDOWS: dict[Channel, timedelta] = {
    Channel.MESSENGER: timedelta(hours=24),
    Channel.ZALO: timedelta(hours=48),
}


CLOSED = datetime.min.replace(tzinfo=UTC)


def closes_at(channel: Channel, last_inbound_at: datetime | None) -> datetime | None:
    """When the channel stops accepting free messages to this person (None: never)."""
    window = WINDOWS.get(channel)
    if window is None:
        return None
    if last_inbound_at is None:  # never wrote on record: treat the window as closed
        return CLOSED
    return last_inbound_at + window


__all__ = ["CLOSED", "WINDOWS", "closes_at"]
