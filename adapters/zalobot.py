"""Zalo Bot API (the Telegram-like Zalo Bot Platform): verify, parse, render, send.

One adapter per district (`POST /webhooks/zalobot/{district}`), one bot token each. Facts are
from channels.md §3 and §5; most of this API is thinly documented, so parsing is lenient.

Decisions (see docs/kenh-zalo.md, "Decision notes"):

- Webhooks arrive either unwrapped (`{"event_name", "message"}`, what implementations observe)
  or in the documented `{"ok": true, "result": {...}}` envelope: both are accepted.
- The de-duplication key is `message.message_id` (there is no update id).
- Only private chats are conversation input: Loa collects personal data, and in a group the
  bot only sees messages that mention it. Messages from bots are ignored.
- The API has no buttons: choices are always a numbered list. A text `#ref` (a code from a
  poster or QR) or `/start ref` is a START with that ref, as on the Zalo OA.
- Images go by URL (`sendPhoto` takes a public URL; no upload is documented); files become
  a link. Voice messages are UNSUPPORTED (the engine answers that it cannot listen to them).
- The bot token is part of every request URL: error messages never include the URL.
"""

from __future__ import annotations

import hmac
import logging
import mimetypes
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from adapters.base import (
    Adapter,
    AdapterError,
    BadRequest,
    Capabilities,
    ConfigurationError,
    RecipientUnreachable,
    RetryLater,
    send_parts,
)
from adapters.textsplit import fits, nfc, numbered, split_text
from flows.schema import REF
from flows.vocab import Attachment, Channel, ConversationKey, Inbound, InboundKind, Outbound

log = logging.getLogger(__name__)

DEFAULT_API = "https://bot-api.zaloplatforms.com"
SECRET_HEADER = "X-Bot-Api-Secret-Token"
MAX_TEXT = 2000  # sendMessage text: 1–2000 characters
MAX_CAPTION = 2000

CAPABILITIES = Capabilities(
    max_text=MAX_TEXT,
    max_buttons=0,  # no buttons, keyboards or quick replies: choices become a numbered list
    max_button_title=0,
    max_quick_replies=0,
    max_payload_bytes=0,
    images=True,
    image_max_bytes=0,  # never uploaded: sendPhoto takes a URL
)

FILE_LINK = "Tệp đính kèm: {url}"

_REF = re.compile(REF)

MediaUrl = Callable[[str], str]
Call = tuple[str, dict[str, Any]]
"""A Bot-API method and its JSON body (without `chat_id`)."""


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


def verify(headers: Mapping[str, str], secret: str | None) -> bool:
    """True only if the request carries our secret token (constant-time compare). Fails closed:
    without a configured secret nothing is accepted."""
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
    return hmac.compare_digest(got.encode("utf-8", "replace"), secret.encode())


# ---------------------------------------------------------------------------------------------
# parse
# ---------------------------------------------------------------------------------------------


def unwrap(update: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The event itself, from either the unwrapped or the `{"ok", "result"}` shape."""
    if "event_name" in update or "message" in update:
        return update
    if update.get("ok") is False:
        return None
    result = update.get("result")
    return result if isinstance(result, Mapping) else None


def start_ref(text: str) -> tuple[bool, str | None]:
    """(is a start, its ref) for `#ref`, `/start` and `/start ref`."""
    text = text.strip()
    if text[:1] == "#" and _REF.match(text[1:]):
        return True, text[1:]
    if text[:6].lower() == "/start" and (len(text) == 6 or text[6].isspace()):
        payload = text[6:].strip()
        return True, payload if payload and _REF.match(payload) else None
    return False, None


def _when(message: Mapping[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(int(message["date"]) / 1000, UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _mime(url: str, default: str) -> str:
    mime, _ = mimetypes.guess_type(urlsplit(url).path)
    return mime or default


def parse_event(update: Mapping[str, Any], district: str) -> list[Inbound]:
    """Every conversation input in one webhook body (one at most). Never raises on a malformed
    body: it is logged and yields nothing."""
    try:
        return _parse(update, district)
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("zalobot: malformed update ignored")
        return []


def _parse(update: Mapping[str, Any], district: str) -> list[Inbound]:
    event = unwrap(update)
    if event is None:
        return []
    message = event.get("message")
    if not isinstance(message, Mapping):
        return []
    name = str(event.get("event_name") or "")
    chat = message.get("chat") or {}
    sender = message.get("from") or {}
    if str(chat.get("chat_type") or "PRIVATE").upper() != "PRIVATE":
        return []
    if sender.get("is_bot") is True:
        return []
    user_id = str(chat.get("id") or sender["id"])
    message_id = str(message["message_id"])
    when = _when(message)

    def inbound(kind: InboundKind, text: str = "", **extra: Any) -> list[Inbound]:
        return [Inbound(district, Channel.ZALOBOT, user_id, kind, message_id, when, text, **extra)]

    if name == "message.text.received":
        text = nfc(str(message.get("text") or ""))
        is_start, ref = start_ref(text)
        if is_start:
            return inbound(InboundKind.START, text, ref=ref)
        return inbound(InboundKind.TEXT, text)
    caption = nfc(str(message.get("caption") or ""))
    if name == "message.image.received":
        # the docs say `photo`, captured traffic shows `photo_url`
        url = _url(message.get("photo_url")) or _url(message.get("photo"))
        if url is None:
            log.warning("zalobot: image %s without a URL", message_id)
            return inbound(InboundKind.UNSUPPORTED, caption)
        return inbound(
            InboundKind.IMAGE, caption, attachments=(Attachment(_mime(url, "image/jpeg"), url),)
        )
    if name == "message.sticker.received":
        sticker = message.get("sticker")
        attachment = Attachment(
            mime="",
            url=_url(message.get("url")),
            unique_id=str(sticker) if sticker not in (None, "") else None,
        )
        return inbound(InboundKind.STICKER, attachments=(attachment,))
    if name == "message.voice.received":
        url = _url(message.get("voice_url"))
        voice = (Attachment("audio/aac", url),) if url else ()
        return inbound(InboundKind.UNSUPPORTED, attachments=voice)
    # message.unsupported.received and whatever Zalo adds next: answered, never silent
    return inbound(InboundKind.UNSUPPORTED, caption)


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------


def public_url(media: str, media_url: MediaUrl | None) -> str:
    if media.startswith(("https://", "http://")):
        return media
    if media_url is None:
        raise ConfigurationError(
            f"Không gửi được '{media}' qua Zalo Bot: cần địa chỉ công khai (LOA_PUBLIC_URL) "
            "để Zalo tải ảnh về."
        )
    return media_url(media)


def render(outbound: Outbound, *, media_url: MediaUrl | None = None) -> list[Call]:
    """The Bot-API calls (method, body without `chat_id`) that deliver `outbound`, in order.

    Choices become a numbered list. Text over 2,000 characters is split at sentence boundaries.
    An image is `sendPhoto` by URL with the text as caption when it fits, else the photo first
    and the text after it; a file becomes a link."""
    text = nfc(outbound.text).strip()
    if outbound.choices:
        text = numbered(text, outbound.choices)
    calls: list[Call] = []
    if outbound.image:
        photo: dict[str, Any] = {"photo": public_url(outbound.image, media_url)}
        if text and fits(text, MAX_CAPTION):
            photo["caption"] = text
            text = ""
        calls.append(("sendPhoto", photo))
    if outbound.file:
        link = FILE_LINK.format(url=public_url(outbound.file, media_url))
        calls.append(("sendMessage", {"text": link}))
    if text:
        calls += [("sendMessage", {"text": part}) for part in split_text(text, MAX_TEXT)]
    return calls


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def error_for(reply: Mapping[str, Any]) -> AdapterError:
    """The delivery error an `{"ok": false, "error_code", "description"}` reply means
    (channels.md §5; the Bot API follows Telegram's HTTP-like codes)."""
    raw = reply.get("error_code")
    try:
        code = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        code = 0
    description = str(reply.get("description") or "")
    detail = f" — Zalo: {description}" if description else ""
    if code == 429:
        params = reply.get("parameters")
        retry_after = params.get("retry_after") if isinstance(params, Mapping) else None
        try:
            seconds = float(retry_after) if retry_after is not None else None
        except (TypeError, ValueError):
            seconds = None
        return RetryLater(f"Zalo Bot giới hạn tốc độ gửi (mã 429){detail}.", seconds)
    if code == 408 or code >= 500:
        return RetryLater(f"Zalo Bot tạm thời lỗi (mã {code}){detail}.")
    if code in (401, 404):
        return ConfigurationError(
            f"Token của Zalo Bot không đúng hoặc bot đã bị xóa (mã {code}){detail}."
        )
    if code == 403:
        return RecipientUnreachable(f"Người dùng không nhận tin từ bot (mã 403){detail}.")
    return BadRequest(f"Zalo Bot từ chối tin nhắn (mã {code or 'không rõ'}){detail}.")


# ---------------------------------------------------------------------------------------------
# adapter
# ---------------------------------------------------------------------------------------------


class ZaloBotAdapter(Adapter):
    """A Zalo Bot for one district."""

    channel = Channel.ZALOBOT
    capabilities = CAPABILITIES

    def __init__(
        self,
        district: str,
        *,
        token: str,
        secret_token: str | None,
        session: aiohttp.ClientSession | None = None,
        api_base: str = DEFAULT_API,
        media_url: MediaUrl | None = None,
        timeout: float = 10.0,
    ) -> None:
        """`media_url(path) -> str` maps a local image path to its LOA_PUBLIC_URL/media/ URL."""
        self.district = district
        self._token = token
        self._secret = secret_token
        self._session = session
        self.api_base = api_base.rstrip("/")
        self._media_url = media_url
        self._timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"ZaloBotAdapter(district={self.district!r})"

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return verify(headers, self._secret)

    def parse(self, body: bytes) -> list[Inbound]:
        try:
            update = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("zalobot: webhook body is not JSON; ignored")
            return []
        if not isinstance(update, Mapping):
            return []
        return parse_event(update, self.district)

    def render(self, message: Outbound) -> list[Call]:
        return render(message, media_url=self._media_url)

    async def send(self, key: ConversationKey, message: Outbound, *, start: int = 0) -> None:
        calls = self.render(message)
        if not calls:
            raise BadRequest("Tin nhắn rỗng: không có chữ, ảnh hay tệp để gửi.")

        async def one(call: Call) -> None:
            method, body = call
            await self.call(method, {"chat_id": key.user_id, **body})

        await send_parts(calls, start, one)

    async def call(self, method: str, body: Mapping[str, Any]) -> Any:
        """POST one Bot-API method; returns its `result` or raises an `AdapterError`."""
        if self._session is None or not self._token:
            raise ConfigurationError("Kênh Zalo Bot chưa được cấu hình để gửi tin.")
        url = f"{self.api_base}/bot{self._token}/{method}"
        try:
            async with self._session.post(
                url,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            raise RetryLater(f"Zalo Bot không trả lời trong {self._timeout:g} giây.") from None
        except aiohttp.ClientError as error:
            # the exception text may carry the URL, and the URL carries the token
            raise RetryLater(f"Không kết nối được tới Zalo Bot ({type(error).__name__}).") from None
        try:
            reply = orjson.loads(raw)
        except orjson.JSONDecodeError:
            reply = None
        if isinstance(reply, Mapping) and "ok" in reply:
            if reply["ok"] is True:
                return reply.get("result")
            refusal = dict(reply)
            if refusal.get("error_code") is None and status >= 400:
                refusal["error_code"] = status
            raise error_for(refusal)
        # not a Bot-API reply (a proxy's error page): judge by the HTTP status alone
        raise error_for({"error_code": status if status >= 400 else 502})


__all__ = [
    "CAPABILITIES",
    "DEFAULT_API",
    "MAX_CAPTION",
    "MAX_TEXT",
    "SECRET_HEADER",
    "Call",
    "MediaUrl",
    "ZaloBotAdapter",
    "error_for",
    "parse_event",
    "render",
    "start_ref",
    "unwrap",
    "verify",
]
