"""The terminal as a channel (`loa chat`): the same conversation as any messenger, in text.

Bot messages are printed as they are delivered; choices become numbered lines ("  1. Đăng ký")
and a typed number picks one. Images are shown as where to find them. Everything else the person
types is ordinary text, matched by the engine exactly as on any other channel.
"""

from __future__ import annotations

import itertools
import time
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from adapters.base import Adapter, Capabilities
from flows.vocab import (
    Attachment,
    Channel,
    Choice,
    ConversationKey,
    Inbound,
    InboundKind,
    NoticeKind,
    Outbound,
)

CAPABILITIES = Capabilities(
    max_text=100_000,
    max_buttons=50,
    max_button_title=200,
    max_quick_replies=50,
    max_payload_bytes=256,
    images=True,
)

BOT = "Loa"
INDENT = "     "


class ConsoleAdapter(Adapter):
    channel = Channel.CONSOLE
    capabilities = CAPABILITIES

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        show_image: Callable[[str], str] | None = None,
    ) -> None:
        self._write = write
        self._show_image = show_image or (lambda image: image)
        self._choices: dict[ConversationKey, tuple[Choice, ...]] = {}
        self._ids = itertools.count(1)
        self._run = f"c{time.time_ns():x}"  # message ids stay unique across runs

    # -- inbound ---------------------------------------------------------------------------------

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return True  # the person at the keyboard is the only source

    def parse(self, body: bytes) -> list[Inbound]:
        raise NotImplementedError("the terminal chat builds inbounds with `line`, `start`, `image`")

    def next_id(self) -> str:
        return f"{self._run}-{next(self._ids)}"

    def start(self, key: ConversationKey, ref: str | None = None) -> Inbound:
        return Inbound(
            district=key.district,
            channel=Channel.CONSOLE,
            user_id=key.user_id,
            kind=InboundKind.START,
            message_id=self.next_id(),
            timestamp=datetime.now(UTC),
            ref=ref,
        )

    def line(self, key: ConversationKey, text: str) -> Inbound | None:
        """What one typed line means: a numbered choice, or text (None for a blank line)."""
        text = unicodedata.normalize("NFC", text).strip()
        if not text:
            return None
        choices = self._choices.get(key, ())
        kind, payload = InboundKind.TEXT, None
        if text.isdigit() and 1 <= int(text) <= len(choices):
            picked = choices[int(text) - 1]
            kind, payload, text = InboundKind.CHOICE, picked.payload, picked.title
        return Inbound(
            district=key.district,
            channel=Channel.CONSOLE,
            user_id=key.user_id,
            kind=kind,
            message_id=self.next_id(),
            timestamp=datetime.now(UTC),
            text=text,
            payload=payload,
        )

    def image(
        self, key: ConversationKey, sha256: str, mime: str, size: int, name: str | None
    ) -> Inbound:
        return Inbound(
            district=key.district,
            channel=Channel.CONSOLE,
            user_id=key.user_id,
            kind=InboundKind.IMAGE,
            message_id=self.next_id(),
            timestamp=datetime.now(UTC),
            attachments=(Attachment(mime=mime, size=size, sha256=sha256, name=name),),
        )

    # -- outbound --------------------------------------------------------------------------------

    def render(self, message: Outbound) -> str:
        lines: list[str] = []
        mark = {NoticeKind.RETRY: " (!)", NoticeKind.ERROR: " (lỗi)"}.get(message.notice, "")
        for n, text in enumerate(message.text.splitlines() or [""]):
            lines.append(f"{BOT}{mark}: {text}" if n == 0 else f"{INDENT}{text}")
        if message.image:
            lines.append(f"{INDENT}[ảnh: {self._show_image(message.image)}]")
        if message.file:
            lines.append(f"{INDENT}[tệp: {self._show_image(message.file)}]")
        for n, choice in enumerate(message.choices, 1):
            lines.append(f"  {n}. {choice.title}")
        return "\n".join(lines)

    async def send(self, key: ConversationKey, message: Outbound) -> None:
        # A message with choices sets what the next typed number refers to (the terminal chat
        # forgets them once the person answers).
        if message.choices:
            self._choices[key] = message.choices
        self._write(self.render(message))

    def forget_choices(self, key: ConversationKey) -> None:
        self._choices.pop(key, None)


__all__ = ["CAPABILITIES", "ConsoleAdapter"]
