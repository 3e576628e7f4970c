"""Telegram Bot API: parse raw updates, render outbound messages, verify webhooks.

Works directly on the Bot-API JSON (plain dicts in, plain dicts out): no aiogram, no pydantic on
the hot path. Importing aiogram costs ~1.7 s and ~157 MB and validating an update through its
models costs more than everything else Loa does per message.

Decisions (see docs/performance.md and channels.md §4):

- The de-duplication key (`Inbound.message_id`) is the `update_id`. It is unique per bot and
  exists on every update type; `chat.id + message_id` would not work for button taps, which
  carry the id of the *bot's* message (two taps on one keyboard would collide).
- Only private chats are conversation input: the bot collects personal data and its replies
  would be public in a group. The conversation's user id is the chat id (equal to the user id
  in a private chat), so a reply goes to `ConversationKey.user_id`.
- `edited_message` is ignored: editing an old message does not rewind the flow (the person
  types "sửa thông tin" instead). `my_chat_member` (blocked / unblocked) is not conversation
  input and yields nothing here; recording it is the application's job.
- Buttons are rendered as a *reply keyboard* (`one_time_keyboard`, `resize_keyboard`): a tap
  sends the button's title as an ordinary message, so the answer reads naturally in the chat
  history, there is no spinner to answer, no stale keyboard under old messages to tap twice and
  no 64-byte limit on what a button can say. The engine matches the text against the choices
  (without diacritics) exactly as it matches a typed answer. An inline keyboard is available
  (`keyboard="inline"`) for callers that need the payload; taps then arrive as CHOICE inbounds
  carrying the callback query id (in `data`) so `answerCallbackQuery` can be sent.
"""

from __future__ import annotations

import hmac
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import orjson

from adapters.base import (
    Adapter,
    BadRequest,
    Capabilities,
    ConfigurationError,
    RecipientUnreachable,
    RetryLater,
    send_parts,
)
from flows.vocab import (
    Attachment,
    Channel,
    Choice,
    ConversationKey,
    Inbound,
    InboundKind,
    Outbound,
)

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT = 4096  # sendMessage text, in UTF-16 code units (how Telegram counts)
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes of UTF-8
MAX_BUTTONS = 100  # inline keyboards allow 100; more than that becomes a numbered list

CAPABILITIES = Capabilities(
    max_text=MAX_TEXT,
    max_buttons=MAX_BUTTONS,
    max_button_title=64,
    max_quick_replies=MAX_BUTTONS,  # the reply keyboard is Telegram's quick-reply analogue
    max_payload_bytes=MAX_CALLBACK_DATA,
    images=True,
    image_max_bytes=10 * 2**20,  # sendPhoto upload limit
)

# /start payloads follow Telegram's own rule (also Loa's rule for every deep-link ref).
_REF = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UTC = UTC
_NFC: Literal["NFC"] = "NFC"
_normalize = unicodedata.normalize
_is_normalized = unicodedata.is_normalized
_from_ts = datetime.fromtimestamp
_TG = Channel.TELEGRAM
_TEXT = InboundKind.TEXT
_START = InboundKind.START

# Message fields that carry something a person sent which Loa cannot use: answered with the
# engine's "unsupported" reply instead of silence. Service messages (pins, joins, payments) are
# not in this list and yield nothing.
_UNSUPPORTED_CONTENT = (
    "poll",
    "dice",
    "game",
    "story",
    "invoice",
    "paid_media",
    "checklist",
)
_FILE_CONTENT = (
    ("video", "video/mp4"),
    ("video_note", "video/mp4"),
    ("voice", "audio/ogg"),
    ("audio", "audio/mpeg"),
)


# ---------------------------------------------------------------------------------------------
# parse
# ---------------------------------------------------------------------------------------------


def parse_update(update: Mapping[str, Any], district: str) -> list[Inbound]:
    """Every conversation input in one raw Bot-API update (usually one, or none).

    Never raises on a malformed update: it is logged and yields nothing, so one bad delivery
    cannot block the webhook (Telegram would retry it for 24 h).
    """
    try:
        message = update.get("message")
        if message is not None:
            return _message(update["update_id"], message, district)
        callback = update.get("callback_query")
        if callback is not None:
            return _callback(update["update_id"], callback, district)
        # edited_message, my_chat_member, channel posts, inline queries: not conversation input
        return []
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError):
        log.warning("telegram: malformed update %r ignored", _update_id(update))
        return []


def _update_id(update: object) -> object:
    return update.get("update_id") if isinstance(update, Mapping) else None


def _nfc(text: str) -> str:
    return text if _is_normalized(_NFC, text) else _normalize(_NFC, text)


def _message(update_id: int, msg: Mapping[str, Any], district: str) -> list[Inbound]:
    chat = msg["chat"]
    if chat.get("type") != "private":
        return []
    user_id = str(chat["id"])
    message_id = str(update_id)
    when = _from_ts(msg["date"], _UTC)
    text = msg.get("text")
    if text is not None:
        text = _nfc(text)
        if text[:6] == "/start" and (len(text) == 6 or text[6] in " @"):
            return [_start(district, user_id, message_id, when, text)]
        # other /commands are ordinary text: the engine's global commands match them
        return [Inbound(district, _TG, user_id, _TEXT, message_id, when, text)]

    caption = msg.get("caption")
    caption = _nfc(caption) if caption else ""
    kind: InboundKind
    attachment: Attachment | None = None
    data: tuple[tuple[str, str], ...] = ()

    photo = msg.get("photo")
    if photo:
        largest = photo[-1]  # PhotoSize list in increasing size
        kind = InboundKind.IMAGE
        attachment = Attachment(
            mime="image/jpeg",  # Telegram re-encodes compressed photos as JPEG
            file_id=largest["file_id"],
            unique_id=largest.get("file_unique_id"),
            size=largest.get("file_size"),
        )
    elif "sticker" in msg or "animation" in msg:
        # an animation also carries `document` (backward compatibility): check it first
        kind = InboundKind.STICKER
        media = msg.get("sticker") or msg["animation"]
        attachment = Attachment(
            mime=media.get("mime_type") or "",
            file_id=media.get("file_id"),
            unique_id=media.get("file_unique_id"),
            size=media.get("file_size"),
        )
    elif "document" in msg:
        doc = msg["document"]
        mime = doc.get("mime_type") or ""
        # screenshots sent "as file" are uncompressed: often the better evidence
        kind = InboundKind.IMAGE if mime.startswith("image/") else InboundKind.FILE
        attachment = Attachment(
            mime=mime,
            file_id=doc["file_id"],
            unique_id=doc.get("file_unique_id"),
            size=doc.get("file_size"),
            name=_nfc(doc["file_name"]) if doc.get("file_name") else None,
        )
    elif "location" in msg:  # a venue carries its location too
        loc = msg["location"]
        kind = InboundKind.LOCATION
        lat, lon = str(loc["latitude"]), str(loc["longitude"])
        caption = caption or f"{lat},{lon}"
        data = (("latitude", lat), ("longitude", lon))
    elif "contact" in msg:
        contact = msg["contact"]
        kind = InboundKind.CONTACT
        phone = str(contact["phone_number"])
        caption = phone
        data = (("phone_number", phone),)
        for field in ("first_name", "last_name", "user_id"):
            if contact.get(field) is not None:
                data += ((field, _nfc(str(contact[field]))),)
    else:
        for field, default_mime in _FILE_CONTENT:
            media = msg.get(field)
            if media is not None:
                kind = InboundKind.FILE
                attachment = Attachment(
                    mime=media.get("mime_type") or default_mime,
                    file_id=media.get("file_id"),
                    unique_id=media.get("file_unique_id"),
                    size=media.get("file_size"),
                    name=media.get("file_name"),
                )
                break
        else:
            if any(field in msg for field in _UNSUPPORTED_CONTENT):
                kind = InboundKind.UNSUPPORTED
            else:
                return []  # a service message (pinned, joined, ...): nothing the person said

    group = msg.get("media_group_id")
    if group is not None:
        # album parts arrive as separate updates, possibly out of order on parallel webhook
        # connections; the platform message id orders them within the group
        data += (("media_group_id", str(group)), ("telegram_message_id", str(msg["message_id"])))
    return [
        Inbound(
            district,
            _TG,
            user_id,
            kind,
            message_id,
            when,
            caption,
            attachments=(attachment,) if attachment is not None else (),
            data=data,
        )
    ]


def _start(district: str, user_id: str, message_id: str, when: datetime, text: str) -> Inbound:
    # "/start", "/start payload" or "/start@bot_name payload"
    _, _, payload = text.partition(" ")
    payload = payload.strip()
    ref = payload if payload and _REF.fullmatch(payload) else None
    if payload and ref is None:
        log.info("telegram: /start payload not a valid ref; starting without it")
    return Inbound(district, _TG, user_id, _START, message_id, when, text, ref=ref)


def _callback(update_id: int, cq: Mapping[str, Any], district: str) -> list[Inbound]:
    payload = cq.get("data")
    if payload is None:  # a game's callback: not ours
        return []
    msg = cq.get("message")
    title = ""
    if msg is not None:
        chat = msg["chat"]
        if chat.get("type") != "private":
            return []
        chat_id = chat["id"]
        title = _button_title(msg, payload)
    else:
        # inline-mode message: no chat, but in a private chat the chat id is the user id
        chat_id = cq["from"]["id"]
    return [
        Inbound(
            district,
            _TG,
            str(chat_id),
            InboundKind.CHOICE,
            str(update_id),
            # a callback query has no date; the time we received the tap is the honest one
            datetime.now(_UTC),
            title,
            payload=_nfc(payload),
            data=(("callback_query_id", str(cq["id"])),),
        )
    ]


def _button_title(msg: Mapping[str, Any], payload: str) -> str:
    """The tapped button's title (for transcripts), found in the message's own keyboard."""
    markup = msg.get("reply_markup")
    if not markup:
        return ""
    for row in markup.get("inline_keyboard", ()):
        for button in row:
            if button.get("callback_data") == payload:
                return _nfc(str(button.get("text", "")))
    return ""


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------

REMOVE_KEYBOARD: dict[str, Any] = {"remove_keyboard": True}
Keyboard = Literal["reply", "inline"]
MediaUrl = Callable[[str], str]


def render(
    chat_id: int | str,
    outbound: Outbound,
    *,
    keyboard: Keyboard = "reply",
    media_url: MediaUrl | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The Bot-API calls (method, JSON body) that deliver `outbound`, in order.

    Text over 4,096 characters is split at sentence boundaries; the keyboard goes on the last
    message. An image becomes `sendPhoto` with the text as caption when it fits 1,024
    characters, else the photo first and the text after it. `media_url` maps a local image path
    (relative to the flows file) to a URL Telegram can fetch; without it the path is left in the
    body for the sender to upload.
    """
    if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
        chat_id = int(chat_id)
    text = _nfc(outbound.text)
    choices = outbound.choices
    markup: dict[str, Any]
    if not choices:
        markup = REMOVE_KEYBOARD
    elif len(choices) > MAX_BUTTONS:
        text = _numbered(text, choices)
        markup = REMOVE_KEYBOARD
    elif keyboard == "inline" and _payloads_fit(choices):
        markup = _inline_keyboard(choices)
    else:
        markup = _reply_keyboard(choices)

    calls: list[tuple[str, dict[str, Any]]] = []
    media = outbound.image or outbound.file
    if media is not None:
        method, field = ("sendPhoto", "photo") if outbound.image else ("sendDocument", "document")
        if media_url is not None and not media.startswith(("http://", "https://")):
            media = media_url(media)
        body: dict[str, Any] = {"chat_id": chat_id, field: media}
        if text and _fits(text, MAX_CAPTION):
            body["caption"] = text
            body["reply_markup"] = markup
            return [(method, body)]
        if not text:
            body["reply_markup"] = markup
            return [(method, body)]
        calls.append((method, body))

    if _fits(text, MAX_TEXT):
        calls.append(("sendMessage", {"chat_id": chat_id, "text": text, "reply_markup": markup}))
        return calls
    parts = split_text(text, MAX_TEXT)
    for part in parts[:-1]:
        calls.append(("sendMessage", {"chat_id": chat_id, "text": part}))
    calls.append(("sendMessage", {"chat_id": chat_id, "text": parts[-1], "reply_markup": markup}))
    return calls


def _units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji counts twice)."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def _fits(text: str, limit: int) -> bool:
    n = len(text)
    if n * 2 <= limit:  # even if every character were astral: the common case, no encoding
        return True
    return n <= limit and _units(text) <= limit


_BREAKS = ("\n\n", "\n", ". ", "! ", "? ", "… ", "; ", ", ", " ")


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split into parts of at most `limit` UTF-16 units, preferring paragraph, then sentence,
    then word boundaries; a hard cut only for a single word longer than the limit."""
    parts: list[str] = []
    rest = text
    while _units(rest) > limit:
        window = rest[:limit]
        excess = _units(window) - limit
        while excess > 0:  # astral characters (emoji) count twice: drop half the excess
            window = window[: len(window) - (excess + 1) // 2]
            excess = _units(window) - limit
        cut = -1
        for sep in _BREAKS:
            at = window.rfind(sep)
            if at > limit // 4:  # never leave a uselessly short part
                cut = at + len(sep)
                break
        if cut <= 0:
            cut = len(window)
        head = rest[:cut].rstrip()
        if head:
            parts.append(head)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts or [""]


def _numbered(text: str, choices: Sequence[Choice]) -> str:
    lines = [text, ""] if text else []
    lines += [f"{i}. {c.title}" for i, c in enumerate(choices, 1)]
    return "\n".join(lines)


def _payloads_fit(choices: Sequence[Choice]) -> bool:
    return all(0 < len(c.payload.encode()) <= MAX_CALLBACK_DATA for c in choices)


@lru_cache(maxsize=1024)
def _reply_keyboard(choices: tuple[Choice, ...]) -> dict[str, Any]:
    # Short titles two to a row ("Có" / "Không", "Đồng ý" / "Không đồng ý"); long ones (unit
    # names) one per row so they are never cut off on a phone.
    per_row = 2 if max(len(c.title) for c in choices) <= 14 else 1
    buttons = [{"text": _nfc(c.title)} for c in choices]
    rows = [buttons[i : i + per_row] for i in range(0, len(buttons), per_row)]
    return {"keyboard": rows, "resize_keyboard": True, "one_time_keyboard": True}


@lru_cache(maxsize=1024)
def _inline_keyboard(choices: tuple[Choice, ...]) -> dict[str, Any]:
    return {
        "inline_keyboard": [
            [{"text": _nfc(c.title), "callback_data": c.payload}] for c in choices
        ]
    }


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


def verify(headers: Mapping[str, str], secret: str | None) -> bool:
    """True only if the webhook request carries our secret token (constant-time compare).

    Fails closed: without a configured secret no webhook request is accepted.
    """
    if not secret:
        return False
    got = headers.get(SECRET_HEADER)
    if got is None:  # a plain dict is case-sensitive; aiohttp's CIMultiDict is not
        lowered = SECRET_HEADER.lower()
        for name, value in headers.items():
            if name.lower() == lowered:
                got = value
                break
        else:
            return False
    return hmac.compare_digest(got.encode(), secret.encode())


# ---------------------------------------------------------------------------------------------
# adapter
# ---------------------------------------------------------------------------------------------

Transport = Callable[[str, bytes], Awaitable[Mapping[str, Any]]]
"""`await transport(method, body)`: POST the JSON body to the Bot API method, return the parsed
JSON reply (`{"ok": ..., "result" | "error_code", "description", "parameters"}`)."""


class TelegramAdapter(Adapter):
    """Telegram for one district. Sending goes through an injected transport (the HTTP client
    comes with the sender; tests and the benchmark inject fakes)."""

    channel = Channel.TELEGRAM
    capabilities = CAPABILITIES

    def __init__(
        self,
        district: str,
        *,
        secret_token: str | None = None,
        transport: Transport | None = None,
        keyboard: Keyboard = "reply",
        media_url: MediaUrl | None = None,
    ) -> None:
        self.district = district
        self._secret = secret_token
        self._transport = transport
        self._keyboard: Keyboard = keyboard
        self._media_url = media_url

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return verify(headers, self._secret)

    def parse(self, body: bytes) -> list[Inbound]:
        try:
            update = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("telegram: webhook body is not JSON; ignored")
            return []
        if not isinstance(update, dict):
            return []
        return parse_update(update, self.district)

    def render(self, chat_id: int | str, message: Outbound) -> list[tuple[str, dict[str, Any]]]:
        return render(chat_id, message, keyboard=self._keyboard, media_url=self._media_url)

    async def send(self, key: ConversationKey, message: Outbound, *, start: int = 0) -> None:
        async def one(call: tuple[str, dict[str, Any]]) -> None:
            await self.call(*call)

        await send_parts(self.render(key.user_id, message), start, one)

    async def answer_callback(self, callback_query_id: str, text: str | None = None) -> None:
        """Stop the client's spinner after an inline-keyboard tap."""
        body: dict[str, Any] = {"callback_query_id": callback_query_id}
        if text:
            body["text"] = text
        await self.call("answerCallbackQuery", body)

    async def call(self, method: str, body: Mapping[str, Any]) -> Any:
        """Serialise, hand to the transport, map a refusal onto the delivery error tree."""
        if self._transport is None:
            raise ConfigurationError("Kênh Telegram chưa được cấu hình để gửi tin.")
        reply = await self._transport(method, orjson.dumps(body))
        if reply.get("ok"):
            return reply.get("result")
        raise error_for(reply)


def error_for(reply: Mapping[str, Any]) -> Exception:
    """The delivery error a Bot-API refusal means (channels.md §4.4 and §5)."""
    code = reply.get("error_code")
    description = str(reply.get("description") or "")
    params = reply.get("parameters") or {}
    if code == 429:
        retry_after = params.get("retry_after")
        return RetryLater(description, float(retry_after) if retry_after is not None else None)
    if code == 403:
        return RecipientUnreachable(description)
    if code in (401, 404):
        return ConfigurationError(description)
    if isinstance(code, int) and code >= 500:
        return RetryLater(description)
    if code == 400 and "chat not found" in description.lower():
        return RecipientUnreachable(description)
    if code == 400:
        return BadRequest(description)
    return RetryLater(description or "Telegram trả lời không rõ ràng")


__all__ = [
    "CAPABILITIES",
    "MAX_CALLBACK_DATA",
    "MAX_CAPTION",
    "MAX_TEXT",
    "SECRET_HEADER",
    "TelegramAdapter",
    "Transport",
    "error_for",
    "parse_update",
    "render",
    "split_text",
    "verify",
]
