"""Dates, durations and windows as Vietnamese organisers read them (Asia/Ho_Chi_Minh time)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo

from bots.console.windows import CLOSED
from flows.vocab import Channel

try:
    from zoneinfo import ZoneInfo

    LOCAL: tzinfo = ZoneInfo("Asia/Ho_Chi_Minh")
except Exception:  # no tz database: Vietnam has kept UTC+7 without DST since 1975
    LOCAL = timezone(timedelta(hours=7))

CHANNEL_NAMES = {
    Channel.MESSENGER: "Messenger",
    Channel.ZALO: "Zalo OA",
    Channel.ZALOBOT: "Zalo Bot",
    Channel.TELEGRAM: "Telegram",
    Channel.WEBCHAT: "Trò chuyện trên web",
    Channel.CONSOLE: "Dòng lệnh",
}


def local(moment: datetime | None) -> str:
    """"14:05 07/08/2023"."""
    if moment is None:
        return ""
    return moment.astimezone(LOCAL).strftime("%H:%M %d/%m/%Y")


def iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def span(delta: timedelta) -> str:
    """A rough duration: "5 phút", "3 giờ", "2 ngày"."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return "dưới 1 phút"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} phút"
    hours = minutes // 60
    if hours < 48:
        rest = minutes % 60
        return f"{hours} giờ" + (f" {rest} phút" if hours < 3 and rest else "")
    return f"{hours // 24} ngày"


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    return f"{span(now - moment)} trước"


def window_text(closes: datetime | None, channel: Channel | None, now: datetime) -> str:
    if channel is None:
        return "Chưa có kênh trò chuyện"
    if closes is None:
        return f"{CHANNEL_NAMES[channel]}: nhắn lúc nào cũng được"
    if closes == CLOSED or closes <= now:
        return f"{CHANNEL_NAMES[channel]}: cửa sổ nhắn tin đã đóng"
    return f"{CHANNEL_NAMES[channel]}: cửa sổ nhắn tin đóng sau {span(closes - now)}"


def window_urgency(closes: datetime | None, now: datetime) -> str:
    """A CSS class: "urgent" under 3 hours left, "closed", "open", or "none"."""
    if closes is None:
        return "none"
    if closes == CLOSED or closes <= now:
        return "closed"
    return "urgent" if closes - now < timedelta(hours=3) else "open"


__all__ = ["CHANNEL_NAMES", "LOCAL", "ago", "iso", "local", "span", "window_text",
           "window_urgency"]
