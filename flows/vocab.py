"""The common vocabulary every layer speaks: channels, inbound and outbound messages.

Value objects are frozen dataclasses; kinds are enums. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Channel(enum.Enum):
    WEBCHAT = "webchat"
    CONSOLE = "console"
    MESSENGER = "messenger"
    ZALO = "zalo"
    ZALOBOT = "zalobot"
    TELEGRAM = "telegram"


class InboundKind(enum.Enum):
    TEXT = "text"
    CHOICE = "choice"  # a button press: `payload` holds the button's payload
    IMAGE = "image"
    FILE = "file"
    STICKER = "sticker"  # also likes and GIFs: never evidence
    LOCATION = "location"
    CONTACT = "contact"
    START = "start"  # a deep-link ref / `/start payload` / Get Started
    SYSTEM = "system"  # an organiser action entering the conversation's inbox
    UNSUPPORTED = "unsupported"


class NoticeKind(enum.Enum):
    REPLY = "reply"  # ordinary conversation text
    RETRY = "retry"  # the answer was not accepted; asked again
    HELP = "help"  # a way out after too many retries, or the help text
    ERROR = "error"  # something on our side went wrong; nothing was lost
    SYSTEM = "system"  # caused by an organiser action (approval, rejection, ...)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A media item as the platform described it, plus what Loa stored of it."""

    mime: str = ""
    url: str | None = None  # platform URL (may expire)
    file_id: str | None = None  # platform file id (Telegram)
    unique_id: str | None = None  # platform's stable id of the content, for duplicate checks
    size: int | None = None
    sha256: str | None = None  # set once the bytes are stored content-addressed
    name: str | None = None  # original file name, if any
    # What inspecting the stored bytes found (bots/media), for the evidence record:
    qr: str | None = None  # text of the QR code(s) in the image (an app or bank account QR)
    phash: str | None = None  # perceptual hash (hex): a weak hint of a near-duplicate image


@dataclass(frozen=True, slots=True)
class Inbound:
    district: str
    channel: Channel
    user_id: str  # channel-scoped
    kind: InboundKind
    message_id: str  # platform message id: the de-duplication key
    timestamp: datetime  # UTC, timezone-aware
    text: str = ""  # NFC-normalised
    payload: str | None = None  # button payload for CHOICE; event name for SYSTEM
    attachments: tuple[Attachment, ...] = ()
    ref: str | None = None  # deep-link payload for START
    data: tuple[tuple[str, str], ...] = ()  # extra key/values of a SYSTEM event


@dataclass(frozen=True, slots=True)
class Choice:
    title: str
    payload: str


@dataclass(frozen=True, slots=True)
class Outbound:
    text: str
    choices: tuple[Choice, ...] = ()
    image: str | None = None  # a path relative to the flows file's folder, or a URL
    file: str | None = None
    notice: NoticeKind = NoticeKind.REPLY


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Who a conversation is with: one person on one channel of one district."""

    district: str
    channel: Channel
    user_id: str

    def __str__(self) -> str:
        return f"{self.district}:{self.channel.value}:{self.user_id}"


def key_of(inbound: Inbound) -> ConversationKey:
    return ConversationKey(inbound.district, inbound.channel, inbound.user_id)


__all__ = [
    "Attachment",
    "Channel",
    "Choice",
    "ConversationKey",
    "Inbound",
    "InboundKind",
    "NoticeKind",
    "Outbound",
    "key_of",
]
