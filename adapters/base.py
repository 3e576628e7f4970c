"""The adapter surface every channel implements: verify, parse, render/send, capabilities.

Adapters import `flows` (the vocabulary) and never `bots` or each other. The web server calls
`verify` on the raw request bytes before anything else, then `parse`; the outbox sender calls
`send`.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from flows.vocab import Channel, ConversationKey, Inbound, Outbound

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a platform can show; the renderer degrades anything beyond it."""

    max_text: int  # characters per message
    max_buttons: int  # buttons on one message (0: none)
    max_button_title: int  # characters per button title
    max_quick_replies: int = 0
    max_payload_bytes: int = 64  # callback data / postback payload
    images: bool = True
    image_max_bytes: int | None = None  # uploads above this are sent by URL instead


class AdapterError(Exception):
    """Base of the delivery error tree (see docs/): what the outbox does next depends on the
    subclass.

    `parts_done`: how many parts of a message a platform needs several calls for (long text
    split, text then image) were delivered before this failure; the sender stores it and the
    retry resumes there (`send(..., start=parts_done)`), so the person never gets a part
    twice."""

    parts_done: int = 0


class RetryLater(AdapterError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthExpired(AdapterError):
    """Refresh the credential, then retry."""


class OutsideWindow(AdapterError):
    """The platform's messaging window is closed: keep the message pending."""


class RecipientUnreachable(AdapterError):
    """Blocked, unsubscribed or unknown recipient: final."""


class ConfigurationError(AdapterError):
    """Wrong token, missing permission: final until an operator fixes it."""


class BadRequest(AdapterError):
    """The platform refused the request as malformed: final."""


class Adapter(abc.ABC):
    channel: Channel
    capabilities: Capabilities

    @abc.abstractmethod
    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """True only if the request provably comes from the platform (constant-time)."""

    @abc.abstractmethod
    def parse(self, body: bytes) -> list[Inbound]:
        """Every conversation input in the request, in order; receipts and echoes excluded."""

    @abc.abstractmethod
    async def send(self, key: ConversationKey, message: Outbound) -> None:
        """Deliver one message or raise an `AdapterError` subclass. Adapters whose messages may
        take several calls also accept `start: int = 0`, the parts already delivered
        (`send_parts`)."""


async def send_parts(
    parts: Sequence[T], start: int, send_one: Callable[[T], Awaitable[object]]
) -> None:
    """Send `parts[start:]` in order; a failure carries how many parts are done in all."""
    for index in range(start, len(parts)):
        try:
            await send_one(parts[index])
        except AdapterError as error:
            error.parts_done = index
            raise
