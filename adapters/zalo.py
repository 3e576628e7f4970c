"""Zalo Official Account (Open API v3 messages, OAuth v4): verify, parse, render, send.

One adapter serves one Zalo *app* (the webhook, its OA secret key and its app id are per app);
every OA that authorised the app is one district's channel. Facts are from channels.md §2 and §5.

Decisions (see docs/kenh-zalo.md, "Decision notes"):

- Signature: `mac=` + SHA-256 of `app_id + raw body + timestamp (from the body) + OA secret
  key`, a plain hash, not an HMAC. `diagnose_signature` names the variant that matches when the
  documented one does not (the open question in channels.md §7), without revealing secrets.
- Choices become up to 5 `oa.query.show` buttons whose payload is the button's title: a tap makes
  the person "send" that title, visible in the chat like a typed answer, and it reaches us as an
  ordinary `user_send_text` that the engine matches against the choices (as Telegram's reply
  keyboard does). More than 5 choices, or a title Zalo cannot show, degrade to a numbered list.
- A text `#ref` (a query button or OA menu item an organiser configured, or typed from a poster)
  is a START with that ref: Zalo OA has no deep-link ref of its own.
- `follow` is a START without ref: first contact, and it opens the 7-day reply window.
- Images are always sent by URL (`LOA_PUBLIC_URL/media/...` through `media_url`), never
  uploaded: uploads are capped at 1 MB each and 5,000 a month and expire after 7 days. A file
  becomes a link, for the same reason.
- Echoes (`oa_send_*`) are not conversation input: `parse_echoes` returns them so the pipeline
  can pause the bot when a human answered from the OA chat.
- One OA per district: a conversation key names the district, and Zalo user ids are scoped to
  the OA, so the district decides which OA (and token) answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson

from adapters.base import (
    Adapter,
    AdapterError,
    AuthExpired,
    BadRequest,
    Capabilities,
    ConfigurationError,
    OutsideWindow,
    RecipientUnreachable,
    RetryLater,
    send_parts,
)
from adapters.textsplit import fits, nfc, numbered, split_text
from flows.schema import REF
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

DEFAULT_API = "https://openapi.zalo.me"
DEFAULT_OAUTH = "https://oauth.zaloapp.com/v4/oa"
SIGNATURE_HEADER = "X-ZEvent-Signature"
MESSAGE_PATH = "/v3.0/oa/message/cs"

MAX_TEXT = 2000  # characters of message.text
MAX_BUTTONS = 5
# Not firmly documented: an SDK transcribing the v3 pages says 100; channels.md advises short.
MAX_BUTTON_TITLE = 100
MAX_QUERY_PAYLOAD = 1000

CAPABILITIES = Capabilities(
    max_text=MAX_TEXT,
    max_buttons=MAX_BUTTONS,
    max_button_title=MAX_BUTTON_TITLE,
    max_quick_replies=0,
    max_payload_bytes=MAX_QUERY_PAYLOAD,
    images=True,
    image_max_bytes=0,  # never uploaded: every image goes by URL
)

DEFAULT_PROMPT = "Bạn chọn một mục bên dưới nhé:"
FILE_LINK = "Tệp đính kèm: {url}"

_REF = re.compile(REF)
_VN = timezone(timedelta(hours=7))  # Vietnam has no daylight saving time


# ---------------------------------------------------------------------------------------------
# tokens (the refresh protocol itself lives with the application; see refresh_tokens)
# ---------------------------------------------------------------------------------------------


class TokenProvider(Protocol):
    """Where the adapter gets an OA's current access token.

    The application implements it over its shared token store (single-use rotating refresh
    tokens must be refreshed under one lock for all processes: channels.md §2.5)."""

    async def access_token(self, oa_id: str) -> str:
        """The OA's current access token (refreshing it first if it is about to expire)."""
        ...

    async def invalidated(self, oa_id: str, token: str) -> None:
        """Zalo refused `token` (-216/-220): refresh unless someone already has."""
        ...


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token lives (Zalo: 90,000 = 25 h)


class TokenRefused(ConfigurationError):
    """Zalo's OAuth server refused a code or refresh token: an OA admin must authorise again."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


async def refresh_tokens(
    session: aiohttp.ClientSession,
    oauth_base: str,
    app_id: str,
    secret_key: str,
    refresh_token: str,
    *,
    timeout: float = 10.0,
) -> TokenPair:
    """Trade a refresh token for a new pair. The old refresh token is spent either way once Zalo
    has seen it: store the new pair before using it. `secret_key` is the *app* secret.

    Raises `TokenRefused` when Zalo refuses, `RetryLater` on network trouble or 5xx (after a
    timeout Zalo may have rotated the token: the caller must treat a later refusal as needing
    re-authorisation, never loop)."""
    form = {"refresh_token": refresh_token, "app_id": app_id, "grant_type": "refresh_token"}
    return await _token_request(session, oauth_base, secret_key, form, timeout)


async def exchange_code(
    session: aiohttp.ClientSession,
    oauth_base: str,
    app_id: str,
    secret_key: str,
    code: str,
    *,
    code_verifier: str | None = None,
    timeout: float = 10.0,
) -> TokenPair:
    """Trade the authorisation code from the OAuth callback (`?code=...&oa_id=...`) for the
    first token pair. `code_verifier` is the PKCE verifier whose challenge is saved in the app."""
    form = {"code": code, "app_id": app_id, "grant_type": "authorization_code"}
    if code_verifier:
        form["code_verifier"] = code_verifier
    return await _token_request(session, oauth_base, secret_key, form, timeout)


def code_challenge(code_verifier: str) -> str:
    """The PKCE S256 challenge to save in the Zalo app for `code_verifier`."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def permission_url(
    app_id: str,
    redirect_uri: str,
    challenge: str,
    *,
    state: str | None = None,
    oauth_base: str = DEFAULT_OAUTH,
) -> str:
    """The link an OA admin opens to authorise the app (the console generates the same)."""
    query = {"app_id": app_id, "redirect_uri": redirect_uri, "code_challenge": challenge}
    if state:
        query["state"] = state
    return f"{oauth_base.rstrip('/')}/permission?{urlencode(query)}"


async def _token_request(
    session: aiohttp.ClientSession,
    oauth_base: str,
    secret_key: str,
    form: dict[str, str],
    timeout: float,
) -> TokenPair:
    url = f"{oauth_base.rstrip('/')}/access_token"
    reply = await _post(session, url, {"secret_key": secret_key}, timeout, form=form)
    code = _error_code(reply)
    if code:
        detail = reply.get("error_description") or reply.get("message") or reply.get("error_name")
        raise TokenRefused(
            f"Zalo không cấp token (mã {code}: {detail or 'không rõ'}). "
            "Quản trị viên OA cần cấp quyền lại cho ứng dụng.",
            code,
        )
    access, refresh = reply.get("access_token"), reply.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        raise TokenRefused("Zalo trả lời mà không có access token và refresh token.")
    try:
        expires_in = int(reply.get("expires_in") or 0)
    except (TypeError, ValueError):
        expires_in = 0
    return TokenPair(access, refresh, expires_in or 90_000)


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


async def _post(
    session: aiohttp.ClientSession | None,
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    *,
    json: Any = None,
    form: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST and return the JSON reply; transport trouble and 5xx become `RetryLater`.

    Zalo reports application errors as HTTP 200 with `error` set: the caller reads it."""
    if session is None:
        raise ConfigurationError("Kênh Zalo chưa được cấu hình để gửi tin (thiếu HTTP session).")
    send_headers = dict(headers)
    data: Any
    if json is not None:
        data = orjson.dumps(json)
        send_headers["Content-Type"] = "application/json"
    else:
        data = dict(form or {})
    try:
        async with session.post(
            url, data=data, headers=send_headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            status = response.status
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raw = await response.read()
    except TimeoutError:
        raise RetryLater(f"Zalo không trả lời trong {timeout:g} giây.") from None
    except aiohttp.ClientError as error:
        # the exception text may carry the URL: keep it out of what gets logged
        raise RetryLater(f"Không kết nối được tới Zalo ({type(error).__name__}).") from None
    if status == 429 or status >= 500:
        raise RetryLater(f"Zalo đang quá tải (HTTP {status}).", retry_after)
    try:
        reply = orjson.loads(raw)
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict):
        if status == 404:
            raise ConfigurationError(
                "Địa chỉ API Zalo không đúng (HTTP 404): kiểm tra LOA_ZALO_API."
            )
        if status >= 400:
            raise BadRequest(f"Zalo từ chối yêu cầu (HTTP {status}).")
        raise RetryLater("Zalo trả lời không phải JSON.")
    if status >= 400 and not _error_code(reply):
        if status in (401, 403, 404):
            raise ConfigurationError(f"Zalo từ chối yêu cầu (HTTP {status}).")
        raise BadRequest(f"Zalo từ chối yêu cầu (HTTP {status}).")
    return reply


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _error_code(reply: Mapping[str, Any]) -> int:
    raw = reply.get("error", 0)
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        return -1  # an error we cannot read is still an error


# ---------------------------------------------------------------------------------------------
# error taxonomy (channels.md §2.3 and §5)
# ---------------------------------------------------------------------------------------------

_RETRY = {-32: "vượt giới hạn số lần gọi API", -100: "lỗi tạm thời của Zalo"}
_AUTH = {-216: "access token không hợp lệ", -220: "access token đã hết hạn hoặc bị thu hồi"}
_WINDOW = {
    -230: "người dùng không tương tác với OA trong 7 ngày qua",
    -232: "người dùng chưa tương tác hoặc đã quá hạn trả lời",
}
_UNREACHABLE = {
    -213: "người dùng chưa quan tâm OA",
    -217: "người dùng đã chặn tin nhắn từ OA",
    -227: "tài khoản người dùng bị khóa hoặc không hoạt động quá 45 ngày",
    -244: "người dùng đã hạn chế loại tin nhắn này",
}
_CONFIG = {
    -209: "ứng dụng chưa được kích hoạt",
    -212: "ứng dụng chưa đăng ký API này",
    -221: "OA cần được xác thực",
    -223: "OA chưa cấp quyền API này cho ứng dụng",
    -224: "gói dịch vụ của OA cần nâng cấp",
    -240: "API tin nhắn v2 đã ngừng",
    -242: "appsecret_proof không đúng",
    -320: "thiếu Zalo Cloud Account",
    -321: "Zalo Cloud Account hết tiền",
    -211: "OA đã hết hạn mức gửi tin",
    -218: "OA đã hết hạn mức gửi tin",
}
_BAD = {
    -201: "tham số không hợp lệ",
    -210: "tham số vượt giới hạn",
    -233: "loại tin nhắn không phù hợp",
    -248: "nội dung vi phạm chính sách",
}
_NIGHT = -234  # promotional messages are refused 22:00–06:00 Vietnam time


def error_for(code: int, message: str = "", *, now: datetime | None = None) -> AdapterError:
    """The delivery error a Zalo error code means. Unknown codes are final (`BadRequest`) so
    they reach an organiser instead of being retried forever."""
    detail = f" — Zalo: {message}" if message else ""
    if code in _RETRY:
        return RetryLater(f"Zalo tạm thời từ chối (mã {code}: {_RETRY[code]}){detail}.")
    if code == _NIGHT:
        now = now or datetime.now(UTC)
        local = now.astimezone(_VN)
        six = local.replace(hour=6, minute=0, second=0, microsecond=0)
        if six <= local:
            six += timedelta(days=1)
        return RetryLater(
            f"Zalo không cho gửi loại tin này từ 22:00 đến 06:00 (mã {code}){detail}.",
            (six - local).total_seconds(),
        )
    if code in _AUTH:
        return AuthExpired(f"Zalo từ chối token (mã {code}: {_AUTH[code]}){detail}.")
    if code in _WINDOW:
        return OutsideWindow(
            f"Ngoài thời hạn trả lời của Zalo (mã {code}: {_WINDOW[code]}){detail}."
        )
    if code in _UNREACHABLE:
        return RecipientUnreachable(
            f"Không gửi được tới người dùng (mã {code}: {_UNREACHABLE[code]}){detail}."
        )
    if code in _CONFIG:
        return ConfigurationError(
            f"Cấu hình Zalo OA cần được sửa (mã {code}: {_CONFIG[code]}){detail}."
        )
    what = _BAD.get(code, "lỗi không rõ")
    return BadRequest(f"Zalo từ chối tin nhắn (mã {code}: {what}){detail}.")


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()  # a plain dict is case-sensitive; aiohttp's CIMultiDict is not
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _load(body: bytes) -> dict[str, Any] | None:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _timestamp_text(event: Mapping[str, Any]) -> str | None:
    ts = event.get("timestamp")
    if isinstance(ts, str):
        return ts
    if isinstance(ts, int) and not isinstance(ts, bool):
        return str(ts)
    return None


def signature(app_id: str, body: bytes, timestamp: str, secret: str) -> str:
    """The hex digest Zalo puts after `mac=` (a plain SHA-256, not an HMAC)."""
    return hashlib.sha256(app_id.encode() + body + timestamp.encode() + secret.encode()).hexdigest()


def _mac(headers: Mapping[str, str]) -> bytes | None:
    value = _header(headers, SIGNATURE_HEADER)
    if value is None:
        return None
    value = value.strip()
    if value[:4].lower() != "mac=":
        return None
    return value[4:].strip().lower().encode("utf-8", "replace")


def verify_signature(
    body: bytes, headers: Mapping[str, str], app_id: str, oa_secret_key: str
) -> bool:
    """True only for a body signed with our app id and OA secret key (constant-time compare).
    Fails closed: without both secrets configured nothing is accepted."""
    if not app_id or not oa_secret_key:
        return False
    got = _mac(headers)
    if got is None:
        return False
    event = _load(body)
    timestamp = _timestamp_text(event) if event is not None else None
    if timestamp is None:
        return False
    expected = signature(app_id, body, timestamp, oa_secret_key).encode()
    return hmac.compare_digest(expected, got)


# ---------------------------------------------------------------------------------------------
# parse
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Echo:
    """A message the OA sent, as Zalo echoes it (`oa_send_*`): by Loa or by a human admin."""

    district: str
    user_id: str
    message_id: str
    timestamp: datetime
    event: str  # oa_send_text, oa_send_image, ...
    text: str = ""
    admin_id: str | None = None  # set when a person typed it in the OA chat tool
    sent_by_us: bool = False  # this process recorded sending that message id

    @property
    def by_human(self) -> bool:
        """Probably typed by a person. Only this process's sends are known here and an echo
        can arrive before the send call returns: with several processes, check the shared
        record of sent ids (`on_sent`) after a short delay before pausing the bot."""
        return self.admin_id is not None or not self.sent_by_us


def _when(event: Mapping[str, Any]) -> datetime:
    raw = event.get("timestamp")
    try:
        return datetime.fromtimestamp(int(raw) / 1000, UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def _guess_mime(url: str | None, default: str) -> str:
    if url:
        mime, _ = mimetypes.guess_type(urlsplit(url).path)
        if mime:
            return mime
    return default


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def start_ref(text: str) -> str | None:
    """The ref of a `#ref` text (a query button, an OA menu item or a code from a poster)."""
    text = text.strip()
    if text[:1] == "#" and _REF.match(text[1:]):
        return text[1:]
    return None


def _attachments(message: Mapping[str, Any], kinds: tuple[str, ...]) -> list[Mapping[str, Any]]:
    found = []
    for item in message.get("attachments") or ():
        if isinstance(item, Mapping) and item.get("type") in kinds:
            payload = item.get("payload")
            found.append(payload if isinstance(payload, Mapping) else {})
    return found


def _image(payload: Mapping[str, Any], default_mime: str) -> Attachment:
    url = _str(payload.get("url"))
    return Attachment(mime=_guess_mime(url, default_mime), url=url)


def _file(payload: Mapping[str, Any]) -> Attachment:
    url = _str(payload.get("url"))
    ext = _str(payload.get("type"))
    mime = mimetypes.types_map.get(f".{ext.lower()}") if ext else None
    name = _str(payload.get("name"))
    return Attachment(
        mime=mime or _guess_mime(name, _guess_mime(url, "application/octet-stream")),
        url=url,
        unique_id=_str(payload.get("checksum")),
        size=_int(payload.get("size")),
        name=nfc(name) if name else None,
    )


def _flatten(info: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """`user_submit_info` fields, the old shape (name, phone, address, ward, district, city) or
    the newer one (user_dob, gender, full_address{...} → full_address.<key>)."""
    out: list[tuple[str, str]] = []
    for key, value in info.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        elif value is not None and value != "" and not isinstance(value, list):
            out.append((f"{prefix}{key}", nfc(str(value))))
    return out


_RECEIPTS = {"user_received_message", "user_seen_message"}
_UNSUPPORTED_EVENTS = {"user_send_audio", "user_send_video", "user_send_business_card"}


class _Router:
    """The part of the adapter `parse` needs: which district an OA id belongs to."""

    def __init__(self, districts: Mapping[str, str]) -> None:
        self.districts = districts

    def parse(self, event: Mapping[str, Any]) -> list[Inbound]:
        name = event.get("event_name")
        if name == "follow":
            return self._follow(event)
        if not isinstance(name, str) or not name.startswith("user_") or name in _RECEIPTS:
            if isinstance(name, str) and name.startswith("anonymous_"):
                log.info("zalo: %s from an anonymous visitor ignored (no user id)", name)
            return []
        oa_id = str(event["recipient"]["id"])
        district = self.districts.get(oa_id)
        if district is None:
            log.warning("zalo: event for unknown OA %s ignored", oa_id)
            return []
        user_id = str(event["sender"]["id"])
        message = event.get("message") or {}
        when = _when(event)
        msg_id = _str(message.get("msg_id")) or f"{name}:{user_id}:{event.get('timestamp')}"
        text = nfc(str(message.get("text") or ""))

        def inbound(kind: InboundKind, **extra: Any) -> list[Inbound]:
            extra.setdefault("text", text)
            return [Inbound(district, Channel.ZALO, user_id, kind, msg_id, when, **extra)]

        if name == "user_send_text":
            ref = start_ref(text)
            if ref is not None:
                return inbound(InboundKind.START, ref=ref)
            return inbound(InboundKind.TEXT)
        if name == "user_send_image":
            images = [_image(p, "image/jpeg") for p in _attachments(message, ("image",))]
            if not any(a.url for a in images):
                log.warning("zalo: image event %s without a URL", msg_id)
                return inbound(InboundKind.UNSUPPORTED)
            return inbound(InboundKind.IMAGE, attachments=tuple(a for a in images if a.url))
        if name in ("user_send_sticker", "user_send_gif"):
            stickers = tuple(
                Attachment(
                    mime="image/gif" if name == "user_send_gif" else "",
                    url=_str(p.get("url")),
                    unique_id=_str(p.get("id")),
                )
                for p in _attachments(message, ("sticker", "gif"))
            )
            return inbound(InboundKind.STICKER, attachments=stickers)
        if name == "user_send_file":
            files = tuple(_file(p) for p in _attachments(message, ("file",)))
            return inbound(InboundKind.FILE, attachments=files)
        if name == "user_send_location":
            for payload in _attachments(message, ("location",)):
                coordinates = payload.get("coordinates") or {}
                lat, lon = str(coordinates["latitude"]), str(coordinates["longitude"])
                return inbound(
                    InboundKind.LOCATION,
                    text=text or f"{lat},{lon}",
                    data=(("latitude", lat), ("longitude", lon)),
                )
            return inbound(InboundKind.UNSUPPORTED)
        if name == "user_send_link":
            links = _attachments(message, ("link",))
            url = _str(links[0].get("url")) if links else None
            return inbound(InboundKind.TEXT, text=text or (url or ""))
        if name == "user_submit_info":
            info = event.get("info") or message.get("info")
            data = tuple(_flatten(info)) if isinstance(info, Mapping) else ()
            phone = dict(data).get("phone", "")
            return inbound(InboundKind.CONTACT, text=phone, data=data)
        if name in _UNSUPPORTED_EVENTS:
            media = tuple(
                Attachment(url=_str(p.get("url")))
                for p in _attachments(message, ("audio", "video"))
            )
            return inbound(InboundKind.UNSUPPORTED, attachments=media)
        # reactions, feedback, chat-now clicks, tag changes: not something said in the chat
        return []

    def _follow(self, event: Mapping[str, Any]) -> list[Inbound]:
        oa_id = str(event["oa_id"])
        district = self.districts.get(oa_id)
        if district is None:
            log.warning("zalo: follow for unknown OA %s ignored", oa_id)
            return []
        user_id = str(event["follower"]["id"])
        # a follow has no msg_id: follower + event + timestamp is stable across retries
        message_id = f"follow:{user_id}:{event.get('timestamp')}"
        return [
            Inbound(district, Channel.ZALO, user_id, InboundKind.START, message_id, _when(event))
        ]


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------

MediaUrl = Callable[[str], str]
Message = dict[str, Any]


def public_url(media: str, media_url: MediaUrl | None) -> str:
    """A URL Zalo can fetch for an image or file: URLs pass through, local paths go through
    `media_url` (which serves them from LOA_PUBLIC_URL/media/...)."""
    if media.startswith(("https://", "http://")):
        return media
    if media_url is None:
        raise ConfigurationError(
            f"Không gửi được '{media}' qua Zalo: cần địa chỉ công khai (LOA_PUBLIC_URL) "
            "để Zalo tải ảnh về."
        )
    return media_url(media)


def _button_ok(choice: Choice) -> bool:
    title = nfc(choice.title).strip()
    # a title that reads as "#ref" would come back as a START, not as the choice
    return bool(title) and fits(title, MAX_BUTTON_TITLE) and start_ref(title) is None


def render(outbound: Outbound, *, media_url: MediaUrl | None = None) -> list[Message]:
    """The `message` objects of `/v3.0/oa/message/cs` that deliver `outbound`, in order.

    Text over 2,000 characters is split at sentence boundaries. Up to 5 choices become query
    buttons on the last message, more become a numbered list. An image goes by URL, with the
    text as its caption when there are no buttons and the text fits one message; otherwise the
    image comes first and the text (with the buttons) after it. A file becomes a link."""
    text = nfc(outbound.text).strip()
    choices = outbound.choices
    buttons: list[dict[str, Any]] | None = None
    if choices:
        if len(choices) <= MAX_BUTTONS and all(_button_ok(c) for c in choices):
            buttons = [
                {"title": title, "type": "oa.query.show", "payload": title}
                for title in (nfc(c.title).strip() for c in choices)
            ]
        else:
            text = numbered(text, choices)

    messages: list[Message] = []
    if outbound.image:
        media = {
            "type": "template",
            "payload": {
                "template_type": "media",
                "elements": [{"media_type": "image", "url": public_url(outbound.image, media_url)}],
            },
        }
        if buttons is None and text and fits(text, MAX_TEXT):
            messages.append({"text": text, "attachment": media})
            text = ""
        else:
            messages.append({"attachment": media})
    if outbound.file:
        messages.append({"text": FILE_LINK.format(url=public_url(outbound.file, media_url))})
    if text:
        messages += [{"text": part} for part in split_text(text, MAX_TEXT)]
    elif buttons:
        messages.append({"text": DEFAULT_PROMPT})
    if buttons:
        messages[-1]["attachment"] = {"type": "template", "payload": {"buttons": buttons}}
    return messages


# ---------------------------------------------------------------------------------------------
# domain verification (the page Zalo checks before it accepts a webhook URL)
# ---------------------------------------------------------------------------------------------

SITE_VERIFICATION_META = "zalo-platform-site-verification"
_VERIFICATION_CODE = re.compile(r"[A-Za-z0-9_-]{8,128}")


def verification_code_ok(code: str) -> bool:
    """A code as Zalo issues them (letters, digits, `_`, `-`): safe in a path and in HTML."""
    return bool(_VERIFICATION_CODE.fullmatch(code))


def site_verification_meta(codes: Iterable[str]) -> str:
    """The `<meta>` tags for the home page (`GET /`), one per Zalo app verifying the domain.
    Codes that are not well-formed are left out (they never reach the HTML)."""
    return "\n".join(
        f'<meta name="{SITE_VERIFICATION_META}" content="{code}" />'
        for code in codes
        if verification_code_ok(code)
    )


def verifier_file_name(code: str) -> str:
    """The file name of Zalo's "HTML file" method, served at the site root."""
    if not verification_code_ok(code):
        raise ValueError(f"mã xác thực Zalo không hợp lệ: {code!r}")
    return f"zalo_verifier{code}.html"


def verifier_page(code: str) -> str:
    """The body of `/zalo_verifier<code>.html`: the meta tag, and the code as text."""
    if not verification_code_ok(code):
        raise ValueError(f"mã xác thực Zalo không hợp lệ: {code!r}")
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f'<meta name="{SITE_VERIFICATION_META}" content="{code}" />\n'
        f"</head>\n<body>{code}</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------
# adapter
# ---------------------------------------------------------------------------------------------

OnSent = Callable[[ConversationKey, str], Awaitable[None]]
"""`await on_sent(key, zalo_message_id)` after each delivered message (to recognise echoes)."""


class ZaloAdapter(Adapter):
    """Zalo OA for one Zalo app: every OA that authorised the app is one district's channel."""

    channel = Channel.ZALO
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        app_id: str,
        oa_secret_key: str,
        accounts: Mapping[str, tuple[str, TokenProvider]],
        session: aiohttp.ClientSession | None = None,
        api_base: str = DEFAULT_API,
        media_url: MediaUrl | None = None,
        on_sent: OnSent | None = None,
        timeout: float = 10.0,
        remember_sent: int = 10_000,
    ) -> None:
        """`accounts` maps each OA id to (district slug, token provider)."""
        self.app_id = app_id
        self._secret = oa_secret_key
        self._accounts = dict(accounts)
        by_district: dict[str, str] = {}
        for oa_id, (district, _) in self._accounts.items():
            if district in by_district:
                raise ValueError(
                    f"Đơn vị '{district}' có hai Zalo OA ({by_district[district]}, {oa_id}); "
                    "mỗi đơn vị chỉ dùng một OA."
                )
            by_district[district] = oa_id
        self._oa_of = by_district
        self._router = _Router({oa_id: d for oa_id, (d, _) in self._accounts.items()})
        self._session = session
        self.api_base = api_base.rstrip("/")
        self._media_url = media_url
        self._on_sent = on_sent
        self._timeout = timeout
        self._sent: dict[str, None] = {}  # insertion-ordered: the oldest is forgotten first
        self._remember = remember_sent

    # -- webhook ----------------------------------------------------------------------------

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return verify_signature(body, headers, self.app_id, self._secret)

    def diagnose_signature(
        self, body: bytes, headers: Mapping[str, str], *, app_secret: str | None = None
    ) -> str | None:
        """Which signing variant a request that failed `verify` matches, if any — for the log
        while the live rule is unconfirmed (channels.md §7). Names only, never secrets."""
        got = _mac(headers)
        event = _load(body)
        if got is None or event is None:
            return None
        body_ts = _timestamp_text(event)
        header_ts = _header(headers, "X-ZEvent-Timestamp")
        candidates: list[tuple[str, str, str | None, str | None]] = [
            ("app_id+oa_secret_key+body_timestamp", self.app_id, body_ts, self._secret),
            ("app_id+oa_secret_key+header_timestamp", self.app_id, header_ts, self._secret),
            ("app_id+app_secret+body_timestamp", self.app_id, body_ts, app_secret),
        ]
        candidates += [
            ("oa_id+oa_secret_key+body_timestamp", oa_id, body_ts, self._secret)
            for oa_id in self._accounts
        ]
        for name, first, ts, secret in candidates:
            if ts is None or not secret:
                continue
            if hmac.compare_digest(signature(first, body, ts, secret).encode(), got):
                return name
        return None

    def parse(self, body: bytes) -> list[Inbound]:
        event = _load(body)
        if event is None:
            log.warning("zalo: webhook body is not a JSON object; ignored")
            return []
        try:
            return self._router.parse(event)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            log.warning("zalo: malformed %r event ignored", event.get("event_name"))
            return []

    def parse_echoes(self, body: bytes) -> list[Echo]:
        """The OA's own messages echoed back (`oa_send_*`), for human-takeover detection."""
        event = _load(body)
        if event is None:
            return []
        name = event.get("event_name")
        if not isinstance(name, str) or not name.startswith("oa_send_"):
            return []
        try:
            sender = event["sender"]
            oa_id = str(sender["id"])
            district = self._router.districts.get(oa_id)
            if district is None:
                return []
            message = event.get("message") or {}
            msg_id = str(message["msg_id"])
            admin = sender.get("admin_id") or event.get("admin_id")
            return [
                Echo(
                    district=district,
                    user_id=str(event["recipient"]["id"]),
                    message_id=msg_id,
                    timestamp=_when(event),
                    event=name,
                    text=nfc(str(message.get("text") or "")),
                    admin_id=str(admin) if admin else None,
                    sent_by_us=msg_id in self._sent,
                )
            ]
        except (KeyError, TypeError, AttributeError):
            log.warning("zalo: malformed %s echo ignored", name)
            return []

    # -- sending ----------------------------------------------------------------------------

    def render(self, message: Outbound) -> list[Message]:
        return render(message, media_url=self._media_url)

    def oa_for(self, district: str) -> str:
        oa_id = self._oa_of.get(district)
        if oa_id is None:
            raise ConfigurationError(f"Đơn vị '{district}' chưa có Zalo OA nào được cấu hình.")
        return oa_id

    async def send(self, key: ConversationKey, message: Outbound, *, start: int = 0) -> None:
        """Deliver the parts of `message` from `start` on, in order; a failure says how many
        parts are done (`AdapterError.parts_done`), so a retry never repeats one."""
        parts = self.render(message)
        if not parts:
            raise BadRequest("Tin nhắn rỗng: không có chữ, ảnh hay tệp để gửi.")

        async def one(part: Mapping[str, Any]) -> None:
            await self.send_message(key, part)

        await send_parts(parts, start, one)

    async def send_message(self, key: ConversationKey, message: Mapping[str, Any]) -> str:
        """POST one rendered `message` to the person; returns Zalo's message id."""
        oa_id = self.oa_for(key.district)
        tokens = self._accounts[oa_id][1]
        token = await tokens.access_token(oa_id)
        reply = await _post(
            self._session,
            self.api_base + MESSAGE_PATH,
            {"access_token": token},
            self._timeout,
            json={"recipient": {"user_id": key.user_id}, "message": message},
        )
        code = _error_code(reply)
        if code:
            if code in _AUTH:
                await tokens.invalidated(oa_id, token)
            raise error_for(code, str(reply.get("message") or ""))
        data = reply.get("data")
        message_id = str(data.get("message_id") or "") if isinstance(data, Mapping) else ""
        if message_id:
            self._remember_sent(message_id)
            if self._on_sent is not None:
                await self._on_sent(key, message_id)
        return message_id

    def _remember_sent(self, message_id: str) -> None:
        self._sent[message_id] = None
        while len(self._sent) > self._remember:
            del self._sent[next(iter(self._sent))]

    def sent_recently(self, message_id: str) -> bool:
        return message_id in self._sent


__all__ = [
    "CAPABILITIES",
    "DEFAULT_API",
    "DEFAULT_OAUTH",
    "MAX_BUTTONS",
    "MAX_BUTTON_TITLE",
    "MAX_TEXT",
    "MESSAGE_PATH",
    "SIGNATURE_HEADER",
    "SITE_VERIFICATION_META",
    "Echo",
    "MediaUrl",
    "OnSent",
    "TokenPair",
    "TokenProvider",
    "TokenRefused",
    "ZaloAdapter",
    "code_challenge",
    "error_for",
    "exchange_code",
    "permission_url",
    "public_url",
    "refresh_tokens",
    "render",
    "signature",
    "site_verification_meta",
    "start_ref",
    "verification_code_ok",
    "verifier_file_name",
    "verifier_page",
    "verify_signature",
]
