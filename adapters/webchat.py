"""The browser chat served by Loa itself at `/` (the embedded default channel).

The browser talks JSON to `/chat/…`. Unlike the messengers, nothing is pushed: the conversation's
outbox *is* the transcript. The browser long-polls `GET /chat/messages?after=<seq>` and by asking
for what follows `seq` it confirms it holds everything up to `seq`. So `send` has nothing to
transmit; it (and `outbox_changed`, which the pipeline calls after a turn) only wakes the
long-polls waiting on that conversation in this process.

Identifiers come from the browser and are checked strictly: the user id is a random token the
page keeps in localStorage, the client message id is random per message (a retried POST reuses
it, so the store's de-duplication processes it once).
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.base import Adapter, Capabilities
from flows.vocab import (
    Attachment,
    Channel,
    ConversationKey,
    Inbound,
    InboundKind,
    NoticeKind,
    Outbound,
)

MAX_TEXT = 4000  # characters a person may type in one message
USER_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{6,64}")
REF = re.compile(r"[A-Za-z0-9_-]{1,64}")
PAYLOAD_MAX = 256

CAPABILITIES = Capabilities(
    max_text=20_000,
    max_buttons=20,
    max_button_title=120,
    max_quick_replies=20,
    max_payload_bytes=PAYLOAD_MAX,
    images=True,
    image_max_bytes=None,
)


class WebchatInputError(ValueError):
    """The browser sent something unusable; the message is shown to the person (Vietnamese)."""


class WebchatAdapter(Adapter):
    channel = Channel.WEBCHAT
    capabilities = CAPABILITIES

    def __init__(self, districts: Iterable[str] = ()) -> None:
        self.districts: tuple[str, ...] = tuple(districts)
        self._signals: dict[ConversationKey, _Signal] = {}
        self._closing = False

    # -- inbound ---------------------------------------------------------------------------------

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Same-origin JSON only: a cross-site form post cannot set this content type without a
        CORS preflight, which Loa never answers."""
        content_type = headers.get("Content-Type", headers.get("content-type", ""))
        return content_type.split(";", 1)[0].strip().lower() == "application/json"

    def parse(self, body: bytes) -> list[Inbound]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WebchatInputError("Tin nhắn không đúng định dạng.") from None
        if not isinstance(data, dict):
            raise WebchatInputError("Tin nhắn không đúng định dạng.")
        user, district, message_id = self.identify(data)
        kind, text, payload, ref = self._content(data)
        return [
            Inbound(
                district=district,
                channel=Channel.WEBCHAT,
                user_id=user,
                kind=kind,
                message_id=message_id,
                timestamp=datetime.now(UTC),
                text=text,
                payload=payload,
                ref=ref,
            )
        ]

    @staticmethod
    def _content(data: Mapping[str, Any]) -> tuple[InboundKind, str, str | None, str | None]:
        ref = data.get("ref")
        payload = data.get("payload")
        text = data.get("text")
        if data.get("start") or ref is not None:
            if not isinstance(ref, str) or not REF.fullmatch(ref):
                ref = None  # a mangled link still opens the menu rather than failing
            return InboundKind.START, "", None, ref
        if payload is not None:
            if not isinstance(payload, str) or not payload or len(payload) > PAYLOAD_MAX:
                raise WebchatInputError("Lựa chọn không hợp lệ.")
            title = _clean(text) if isinstance(text, str) else ""
            return InboundKind.CHOICE, title[:MAX_TEXT], payload, None
        if not isinstance(text, str) or not (text := _clean(text)):
            raise WebchatInputError("Tin nhắn trống.")
        if len(text) > MAX_TEXT:
            raise WebchatInputError(
                f"Tin nhắn dài quá {MAX_TEXT} ký tự, bạn rút gọn giúp mình nhé."
            )
        return InboundKind.TEXT, text, None, None

    def identify(self, data: Mapping[str, Any]) -> tuple[str, str, str]:
        """(user, district, client message id) from a request, checked."""
        user = data.get("user")
        if not isinstance(user, str) or not USER_ID.fullmatch(user):
            raise WebchatInputError("Mã người dùng không hợp lệ, bạn tải lại trang giúp mình nhé.")
        district = self.district_of(data.get("district"))
        message_id = data.get("id")
        if not isinstance(message_id, str) or not MESSAGE_ID.fullmatch(message_id):
            raise WebchatInputError("Mã tin nhắn không hợp lệ, bạn tải lại trang giúp mình nhé.")
        return user, district, message_id

    def district_of(self, value: object) -> str:
        if value in (None, "") and self.districts:
            return self.districts[0]
        if isinstance(value, str) and value in self.districts:
            return value
        raise WebchatInputError("Không tìm thấy đơn vị này, bạn kiểm tra lại đường dẫn nhé.")

    def key(self, user: object, district: object) -> ConversationKey:
        if not isinstance(user, str) or not USER_ID.fullmatch(user):
            raise WebchatInputError("Mã người dùng không hợp lệ, bạn tải lại trang giúp mình nhé.")
        return ConversationKey(self.district_of(district), Channel.WEBCHAT, user)

    @staticmethod
    def image_inbound(
        key: ConversationKey, message_id: str, sha256: str, mime: str, size: int, name: str | None
    ) -> Inbound:
        """An uploaded image, already checked and stored content-addressed."""
        return Inbound(
            district=key.district,
            channel=Channel.WEBCHAT,
            user_id=key.user_id,
            kind=InboundKind.IMAGE,
            message_id=message_id,
            timestamp=datetime.now(UTC),
            attachments=(Attachment(mime=mime, size=size, sha256=sha256, name=name),),
        )

    # -- outbound --------------------------------------------------------------------------------

    @staticmethod
    def render(seq: int, message: Outbound) -> dict[str, Any]:
        """One bot message as the page's JSON."""
        row: dict[str, Any] = {"seq": seq, "text": message.text}
        if message.choices:
            row["choices"] = [{"title": c.title, "payload": c.payload} for c in message.choices]
        if message.image:
            row["image"] = message.image
        if message.file:
            row["file"] = message.file
        if message.notice is not NoticeKind.REPLY:
            row["notice"] = message.notice.value
        return row

    async def send(self, key: ConversationKey, message: Outbound) -> None:
        """Nothing to transmit: the message is in the outbox, which the browser reads."""
        self.outbox_changed(key)

    def outbox_changed(self, key: ConversationKey) -> None:
        signal = self._signals.pop(key, None)
        if signal is not None:
            signal.event.set()

    @property
    def closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """The server is stopping: wake every long-poll so it answers now."""
        self._closing = True
        for signal in self._signals.values():
            signal.event.set()
        self._signals.clear()

    def listen(self, key: ConversationKey) -> Listener:
        """Register interest *before* reading the outbox, then `wait` if it was empty: a turn
        finishing in between still wakes the listener."""
        return Listener(self._signals, key)


class _Signal:
    __slots__ = ("event", "waiting")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiting = 0


class Listener:
    """One long-poll's interest in a conversation (a context manager)."""

    def __init__(self, signals: dict[ConversationKey, _Signal], key: ConversationKey) -> None:
        self._signals = signals
        self._key = key
        signal = signals.get(key)
        if signal is None:
            signal = signals[key] = _Signal()
        signal.waiting += 1
        self._signal = signal

    async def wait(self, timeout: float) -> bool:
        """True once this process handled a turn of the conversation; False on timeout."""
        try:
            await asyncio.wait_for(self._signal.event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        # The map holds no more than the open long-polls: the last one out removes the entry.
        signal = self._signal
        signal.waiting -= 1
        if signal.waiting == 0 and self._signals.get(self._key) is signal:
            del self._signals[self._key]

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


__all__ = ["CAPABILITIES", "WebchatAdapter", "WebchatInputError"]
