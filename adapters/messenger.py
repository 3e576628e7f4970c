"""Facebook Messenger (Page) adapter: webhook verification, parsing, sending, Page setup.

The server calls, in order: `verify_handshake(query)` for the GET subscription handshake;
`verify(raw_body, headers)` on every POST before anything else; then `parse_all(raw_body)` once,
which gives the conversation inputs, the echoes of what the Page sent, and warnings to log. The
outbox sender calls `send(key, outbound, outbox_id=...)`. `loa webhook set` calls
`subscribe_app` and `set_profile`.

Platform facts are in research/channels.md §1; decisions in docs/kenh-messenger.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import mimetypes
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import orjson

from adapters.base import (
    Adapter,
    AdapterError,
    BadRequest,
    Capabilities,
    ConfigurationError,
    OutsideWindow,
    RecipientUnreachable,
    RetryLater,
    send_parts,
)
from adapters.messenger_render import MAX_PAYLOAD, Message, render
from flows.vocab import (
    Attachment,
    Channel,
    Choice,
    ConversationKey,
    Inbound,
    InboundKind,
    Outbound,
)

logger = logging.getLogger(__name__)

GRAPH_API_VERSION = "v25.0"  # pinned: Meta retires each version about two years after release
DEFAULT_GRAPH_API = "https://graph.facebook.com"
SIGNATURE_HEADER = "X-Hub-Signature-256"
METADATA_PREFIX = "outbox:"  # every message Loa sends carries metadata "outbox:<id>"
DEFAULT_GET_STARTED = "GET_STARTED"
# The thumbs-up "like" in its three sizes: a sticker, never evidence.
LIKE_STICKER_IDS = frozenset({"369239263222822", "369239343222814", "369239383222810"})
SUBSCRIBED_FIELDS = (
    "messages",
    "messaging_postbacks",
    "messaging_referrals",
    "message_echoes",
    "message_deliveries",
    "message_reads",
)
MAX_GREETING = 160
MAX_MENU_ITEMS = 20
MAX_MENU_TITLE = 30

CAPABILITIES = Capabilities(
    max_text=2000,
    max_buttons=3,
    max_button_title=20,
    max_quick_replies=13,
    max_payload_bytes=MAX_PAYLOAD,
    images=True,
    image_max_bytes=8 * 1024 * 1024,  # images Meta fetches by URL
)

# Graph API error codes (research/channels.md §1.3 and §5).
_WINDOW_SUBCODE = 2018278
_RESTRICTED_SUBCODE = 1893063
_UNREACHABLE_CODES = frozenset({551})
_UNREACHABLE_SUBCODES = frozenset({1545041, 2018001})  # unavailable; "No matching user found"
_RETRY_CODES = frozenset({1, 2, 4, 17, 32, 613, 1200, 80006})
_CONFIG_CODES = frozenset({3, 10, 190, 200, 230})

_VERSIONED = re.compile(r"/v\d+\.\d+$")


@dataclass(frozen=True, slots=True)
class MessengerPage:
    """One Facebook Page connected to Loa, and the district it belongs to."""

    page_id: str
    district: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Echo:
    """A copy of a message the Page sent: by Loa itself, by another app, or by a person typing
    in the Page inbox. `from_loa` False means a human (or another tool) took over the thread."""

    district: str
    user_id: str  # the person the Page wrote to (the echo's recipient)
    mid: str
    app_id: str | None
    metadata: str | None
    timestamp: datetime
    from_loa: bool

    @property
    def by_human(self) -> bool:
        """Not sent by Loa: the pipeline pauses the bot for this person (same name as Zalo's)."""
        return not self.from_loa

    @property
    def outbox_id(self) -> str | None:
        """The outbox id Loa put in the metadata, if this echo is of Loa's own send."""
        if self.metadata and self.metadata.startswith(METADATA_PREFIX):
            return self.metadata[len(METADATA_PREFIX) :] or None
        return None


@dataclass(frozen=True, slots=True)
class Parsed:
    """Everything in one webhook body: inputs in order, echoes, and warnings for the log."""

    inbounds: tuple[Inbound, ...] = ()
    echoes: tuple[Echo, ...] = ()
    warnings: tuple[str, ...] = ()


def graph_root(base: str) -> str:
    """The versioned Graph API root: `base` as given if it already ends in `/vNN.N`."""
    base = base.rstrip("/")
    return base if _VERSIONED.search(base) else f"{base}/{GRAPH_API_VERSION}"


def media_url_under(public_url: str) -> Callable[[str], str]:
    """Default resolver of `Outbound.image`/`file`: URLs pass through; anything else is served
    by Loa under `<public_url>/media/`."""
    public_url = public_url.rstrip("/")

    def resolve(reference: str) -> str:
        if reference.startswith(("https://", "http://")):
            return reference
        if not public_url:
            raise ConfigurationError(
                "Chưa đặt LOA_PUBLIC_URL: Messenger không tải được ảnh/tệp Loa gửi."
            )
        name = reference.lstrip("/").removeprefix("media/")
        return f"{public_url}/media/{quote(name)}"

    return resolve


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _utc(milliseconds: Any) -> datetime:
    if isinstance(milliseconds, int | float) and not isinstance(milliseconds, bool):
        try:
            return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.now(tz=UTC)


def _str_id(value: Any) -> str:
    """Meta's ids are strings, but some (`app_id`, `sticker_id`) arrive as JSON numbers."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    return ""


def _id(party: Any) -> str:
    return _str_id(party.get("id")) if isinstance(party, dict) else ""


def _nfc(value: Any) -> str:
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else ""


def _guess_mime(url: str) -> str:
    return mimetypes.guess_type(urlsplit(url).path)[0] or ""


def _file_name(url: str) -> str | None:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name or None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `Retry-After` or Meta's business-use-case usage header."""
    raw = _header(headers, "Retry-After")
    if raw:
        try:
            return max(float(raw), 0.0)
        except ValueError:
            pass
    usage = _header(headers, "X-Business-Use-Case-Usage")
    if usage:
        try:
            data = json.loads(usage)
            minutes = [
                float(item.get("estimated_time_to_regain_access") or 0)
                for items in data.values()
                for item in items
            ]
        except (ValueError, AttributeError, TypeError):
            return None
        if minutes and max(minutes) > 0:
            return max(minutes) * 60
    return None


def classify_error(status: int, body: Any, headers: Mapping[str, str]) -> AdapterError:
    """The delivery error a Graph API failure means (research/channels.md §5 taxonomy)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    text = str(error.get("message") or "")
    described = f"Graph API trả lỗi HTTP {status}"
    if code is not None:
        described += f", mã {code}" + (f"/{subcode}" if subcode is not None else "")
    if text:
        described += f": {text}"

    if (code == 10 and subcode == _WINDOW_SUBCODE) or "outside of allowed window" in text.lower():
        return OutsideWindow(f"Ngoài khung 24 giờ của Messenger ({described})")
    if code in _UNREACHABLE_CODES or subcode in _UNREACHABLE_SUBCODES:
        return RecipientUnreachable(f"Người nhận không nhận được tin ({described})")
    if code == 10 and subcode == _RESTRICTED_SUBCODE:
        return ConfigurationError(f"Trang đang bị hạn chế gửi tin ({described})")
    if status == 429 or status >= 500 or code in _RETRY_CODES:
        return RetryLater(
            f"Graph API tạm thời lỗi, sẽ gửi lại ({described})", _retry_after(headers)
        )
    if code in _CONFIG_CODES or (code is not None and 200 <= code < 300):
        return ConfigurationError(f"Token hoặc quyền của Trang có vấn đề ({described})")
    return BadRequest(f"Graph API từ chối yêu cầu ({described})")


class MessengerAdapter(Adapter):
    """One Meta app serving any number of Pages, each Page owned by one district."""

    channel = Channel.MESSENGER
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        app_secret: str,
        verify_token: str,
        pages: Mapping[str, tuple[str, str]],
        session: aiohttp.ClientSession,
        graph_api: str = DEFAULT_GRAPH_API,
        public_url: str = "",
        app_id: str | None = None,
        get_started_payload: str = DEFAULT_GET_STARTED,
        media_url: Callable[[str], str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """`pages` maps page id → (district, page access token). `app_id` (optional) makes
        echoes of Loa's own sends recognisable even without the metadata marker."""
        if not app_secret:
            raise ValueError("Thiếu app secret của ứng dụng Meta (Messenger).")
        self._app_secret = app_secret.encode()
        self._verify_token = verify_token.encode()
        self._session = session
        self._root = graph_root(graph_api)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.app_id = app_id
        self.get_started_payload = get_started_payload
        self._media_url = media_url or media_url_under(public_url)
        self._pages: dict[str, MessengerPage] = {}
        self._districts: dict[str, MessengerPage] = {}
        for page_id, (district, token) in pages.items():
            page = MessengerPage(str(page_id), district, token)
            if district in self._districts:
                raise ValueError(
                    f"Đơn vị {district!r} có hai Trang Messenger "
                    f"({self._districts[district].page_id}, {page.page_id}); mỗi đơn vị một Trang."
                )
            self._pages[page.page_id] = page
            self._districts[district] = page

    @property
    def pages(self) -> tuple[MessengerPage, ...]:
        return tuple(self._pages.values())

    # --- webhook -----------------------------------------------------------------------------

    def verify_handshake(self, query: Mapping[str, str]) -> str | None:
        """The `hub.challenge` to answer (200, text/plain) if Meta's GET handshake carries our
        verify token; None → answer 403."""
        if query.get("hub.mode") != "subscribe" or not self._verify_token:
            return None
        token = (query.get("hub.verify_token") or "").encode()
        challenge = query.get("hub.challenge")
        if not challenge or not hmac.compare_digest(token, self._verify_token):
            return None
        return challenge

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`."""
        header = _header(headers, SIGNATURE_HEADER)
        if not header:
            return False
        scheme, _, given = header.strip().partition("=")
        if scheme.lower() != "sha256" or not given:
            return False
        expected = hmac.new(self._app_secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "replace"))

    def parse(self, body: bytes) -> list[Inbound]:
        parsed = self.parse_all(body)
        for warning in parsed.warnings:
            logger.warning("%s", warning)
        return list(parsed.inbounds)

    def parse_echoes(self, body: bytes) -> list[Echo]:
        parsed = self.parse_all(body)
        for warning in parsed.warnings:
            logger.warning("%s", warning)
        return list(parsed.echoes)

    def parse_all(self, body: bytes) -> Parsed:
        """Every entry and every event of a webhook body, in order. Never raises."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Parsed(warnings=("Messenger: nội dung webhook không phải JSON hợp lệ.",))
        if not isinstance(data, dict) or data.get("object") != "page":
            kind = data.get("object") if isinstance(data, dict) else type(data).__name__
            return Parsed(warnings=(f"Messenger: bỏ qua webhook không phải của Trang ({kind!r}).",))
        inbounds: list[Inbound] = []
        echoes: list[Echo] = []
        warnings: dict[str, None] = {}  # ordered and de-duplicated
        entries = data.get("entry")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            events = entry.get("messaging")
            # `standby` events belong to another app holding thread control: not ours to answer.
            for event in events if isinstance(events, list) else []:
                if isinstance(event, dict):
                    self._event(entry, event, inbounds, echoes, warnings)
        return Parsed(tuple(inbounds), tuple(echoes), tuple(warnings))

    def _event(
        self,
        entry: dict[str, Any],
        event: dict[str, Any],
        inbounds: list[Inbound],
        echoes: list[Echo],
        warnings: dict[str, None],
    ) -> None:
        sender, recipient = _id(event.get("sender")), _id(event.get("recipient"))
        message = event.get("message")
        echo = message if isinstance(message, dict) and message.get("is_echo") else None
        page_id = _id(entry) or (sender if echo is not None else recipient)
        page = self._pages.get(page_id)
        if page is None:
            unknown = f"Messenger: Trang {page_id or '?'} chưa được cấu hình, bỏ qua sự kiện."
            warnings[unknown] = None
            return
        milliseconds = event.get("timestamp", entry.get("time"))
        timestamp = _utc(milliseconds)
        if echo is not None:
            echoes.append(self._echo(page.district, recipient, echo, milliseconds, timestamp))
            return
        if not sender:
            warnings["Messenger: sự kiện không có người gửi, bỏ qua."] = None
            return
        fallback_id = f"{sender}:{milliseconds}"  # referrals carry no mid (channels.md §5.2)

        def inbound(kind: InboundKind, message_id: str, **values: Any) -> Inbound:
            return Inbound(
                page.district, Channel.MESSENGER, sender, kind, message_id, timestamp, **values
            )

        postback, referral = event.get("postback"), event.get("referral")
        if isinstance(message, dict):
            mid = str(message.get("mid") or fallback_id)
            items = self._message_items(message)
            for number, (kind, values) in enumerate(items, start=1):
                inbounds.append(
                    inbound(kind, mid if len(items) == 1 else f"{mid}#{number}", **values)
                )
        elif isinstance(postback, dict):
            mid = str(postback.get("mid") or fallback_id)
            payload = postback.get("payload") if isinstance(postback.get("payload"), str) else ""
            title = _nfc(postback.get("title"))
            ref = self._ref(postback.get("referral"))
            if ref is not None or payload == self.get_started_payload:
                inbounds.append(
                    inbound(InboundKind.START, mid, text=title, payload=payload, ref=ref)
                )
            else:
                inbounds.append(inbound(InboundKind.CHOICE, mid, text=title, payload=payload))
        elif isinstance(referral, dict):
            inbounds.append(inbound(InboundKind.START, fallback_id, ref=self._ref(referral)))
        # delivery, read, reaction, message_edit, optin…: not conversation input.

    @staticmethod
    def _ref(referral: Any) -> str | None:
        """The m.me `ref` exactly as sent. Loa's refs use [A-Za-z0-9_-] but Meta allows more
        (`. : + / =`); the engine decides what an unknown or malformed ref means."""
        if isinstance(referral, dict) and isinstance(referral.get("ref"), str):
            return str(referral["ref"])
        return None

    def _echo(
        self,
        district: str,
        user_id: str,
        message: dict[str, Any],
        milliseconds: Any,
        timestamp: datetime,
    ) -> Echo:
        app = _str_id(message.get("app_id")) or None
        metadata = message.get("metadata") if isinstance(message.get("metadata"), str) else None
        ours = bool(metadata and metadata.startswith(METADATA_PREFIX)) or (
            self.app_id is not None and app == self.app_id
        )
        mid = str(message.get("mid") or f"{user_id}:{milliseconds}")
        return Echo(district, user_id, mid, app, metadata, timestamp, ours)

    @staticmethod
    def _message_items(message: dict[str, Any]) -> list[tuple[InboundKind, dict[str, Any]]]:
        """What one `message` holds, as (kind, Inbound fields): one item per attachment so that
        several photos picked together are several pieces of evidence, in order."""
        text = _nfc(message.get("text"))
        quick_reply = message.get("quick_reply")
        if isinstance(quick_reply, dict) and isinstance(quick_reply.get("payload"), str):
            return [(InboundKind.CHOICE, {"text": text, "payload": quick_reply["payload"]})]
        items: list[tuple[InboundKind, dict[str, Any]]] = []
        if text:
            items.append((InboundKind.TEXT, {"text": text}))
        stickers: set[str] = set()
        attachments = message.get("attachments")
        for attachment in attachments if isinstance(attachments, list) else []:
            if not isinstance(attachment, dict):
                continue
            kind = attachment.get("type")
            payload = attachment.get("payload")
            payload = payload if isinstance(payload, dict) else {}
            url = payload.get("url") if isinstance(payload.get("url"), str) else None
            sticker_id = payload.get("sticker_id")
            if sticker_id is not None or kind == "sticker":
                # During Meta's 2026 transition one like arrives as an `image` with a sticker id
                # *and* a `sticker` attachment: one sticker, never an image.
                sticker = _str_id(sticker_id) or _str_id(message.get("sticker_id"))
                if sticker not in stickers:
                    stickers.add(sticker)
                    items.append(_sticker(sticker, url))
            elif kind == "image":
                mime = _guess_mime(url) if url else ""
                items.append(
                    (InboundKind.IMAGE, {"attachments": (Attachment(mime=mime, url=url),)})
                )
            elif kind in ("file", "video", "audio"):
                item = Attachment(
                    mime=_guess_mime(url) if url else "",
                    url=url,
                    name=_file_name(url) if url else None,
                )
                items.append((InboundKind.FILE, {"attachments": (item,)}))
            elif kind == "location":
                items.append((InboundKind.LOCATION, {"data": _coordinates(payload)}))
            else:
                items.append((InboundKind.UNSUPPORTED, {"data": (("type", str(kind)),)}))
        top_sticker = _str_id(message.get("sticker_id"))
        if top_sticker and top_sticker not in stickers:
            items.append(_sticker(top_sticker, None))
        if not items:
            items.append((InboundKind.UNSUPPORTED, {}))
        return items

    # --- sending -----------------------------------------------------------------------------

    def render(self, message: Outbound, *, outbox_id: str | None = None) -> list[Message]:
        """The Send API `message` objects for `message`, each marked with metadata
        `outbox:<outbox_id>` (`outbox:loa` without an id)."""
        return render(
            message, media_url=self._media_url, metadata=f"{METADATA_PREFIX}{outbox_id or 'loa'}"
        )

    async def send(
        self,
        key: ConversationKey,
        message: Outbound,
        *,
        outbox_id: str | None = None,
        start: int = 0,
    ) -> None:
        """POST the rendered parts from `start` on to `/me/messages`, in order; a failure says
        how many parts are done (`AdapterError.parts_done`), so a retry never repeats one."""
        if key.channel is not Channel.MESSENGER:
            raise BadRequest(f"Kênh {key.channel.value} không phải Messenger.")
        page = self._page_of_district(key.district)

        async def one(body: dict[str, Any]) -> None:
            await self._call(
                "POST",
                page,
                "me/messages",
                json_body={
                    "recipient": {"id": key.user_id},
                    "messaging_type": "RESPONSE",
                    "message": body,
                },
            )

        await send_parts(self.render(message, outbox_id=outbox_id), start, one)

    # --- Page setup (`loa webhook set`) ------------------------------------------------------

    async def subscribe_app(self, page_id: str, fields: Sequence[str] = SUBSCRIBED_FIELDS) -> None:
        """Subscribe this app to the Page's webhook fields (needs `pages_manage_metadata`)."""
        page = self._page(page_id)
        data = await self._call(
            "POST",
            page,
            f"{page.page_id}/subscribed_apps",
            params={"subscribed_fields": ",".join(fields)},
        )
        _require_success(data, "đăng ký nhận webhook của Trang")

    async def subscribed_fields(self, page_id: str) -> tuple[str, ...]:
        """The webhook fields the Page delivers to this app (to this `app_id` if configured,
        else to any app): a health check, since Meta unsubscribes after long failures."""
        page = self._page(page_id)
        data = await self._call("GET", page, f"{page.page_id}/subscribed_apps")
        apps = data.get("data") if isinstance(data, dict) else None
        fields: dict[str, None] = {}
        for app in apps if isinstance(apps, list) else []:
            if not isinstance(app, dict):
                continue
            if self.app_id is not None and str(app.get("id")) != self.app_id:
                continue
            for name in app.get("subscribed_fields") or []:
                fields[str(name)] = None
        return tuple(fields)

    async def set_profile(
        self,
        page_id: str,
        get_started_payload: str | None = None,
        greeting: str | None = None,
        persistent_menu: Sequence[Choice] = (),
    ) -> None:
        """Set the Page's Get Started button, greeting and persistent menu (postback items).

        A menu needs Get Started, so it is always set. An empty menu leaves the current one.
        """
        page = self._page(page_id)
        payload = get_started_payload or self.get_started_payload
        profile: dict[str, Any] = {"get_started": {"payload": payload}}
        if greeting:
            greeting = unicodedata.normalize("NFC", greeting).strip()
            if len(greeting) > MAX_GREETING:
                raise BadRequest(f"Lời chào dài {len(greeting)} ký tự, tối đa {MAX_GREETING}.")
            profile["greeting"] = [{"locale": "default", "text": greeting}]
        if persistent_menu:
            if len(persistent_menu) > MAX_MENU_ITEMS:
                raise BadRequest(f"Menu có {len(persistent_menu)} mục, tối đa {MAX_MENU_ITEMS}.")
            items = []
            for choice in persistent_menu:
                title = unicodedata.normalize("NFC", choice.title).strip()
                if not 0 < len(title) <= MAX_MENU_TITLE:
                    raise BadRequest(f"Mục menu {title!r}: tên từ 1 đến {MAX_MENU_TITLE} ký tự.")
                if not 0 < len(choice.payload) <= MAX_PAYLOAD:
                    raise BadRequest(f"Mục menu {title!r}: payload từ 1 đến {MAX_PAYLOAD} ký tự.")
                items.append({"type": "postback", "title": title, "payload": choice.payload})
            profile["persistent_menu"] = [
                {"locale": "default", "composer_input_disabled": False, "call_to_actions": items}
            ]
        data = await self._call("POST", page, "me/messenger_profile", json_body=profile)
        _require_success(data, "cài đặt hồ sơ Messenger của Trang")

    # --- plumbing ----------------------------------------------------------------------------

    def _page(self, page_id: str) -> MessengerPage:
        page = self._pages.get(str(page_id))
        if page is None:
            raise ConfigurationError(f"Trang Messenger {page_id} chưa được cấu hình.")
        return page

    def _page_of_district(self, district: str) -> MessengerPage:
        page = self._districts.get(district)
        if page is None:
            raise ConfigurationError(f"Đơn vị {district!r} chưa có Trang Messenger.")
        return page

    async def _call(
        self,
        method: str,
        page: MessengerPage,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> Any:
        """One Graph API request with the Page token; the decoded JSON answer, or the delivery
        error it means. Messages never include the URL: it carries the token."""
        proof = hmac.new(self._app_secret, page.token.encode(), hashlib.sha256).hexdigest()
        query = {"access_token": page.token, "appsecret_proof": proof, **(params or {})}
        try:
            async with self._session.request(
                method, f"{self._root}/{path}", params=query, json=json_body, timeout=self._timeout
            ) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError:
            raise RetryLater(
                f"Graph API không trả lời trong {self._timeout.total:g} giây; tin có thể đã tới."
            ) from None
        except aiohttp.ClientError as error:
            raise RetryLater(f"Không kết nối được Graph API ({type(error).__name__}).") from None
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            data = None
        if status >= 300:
            raise classify_error(status, data, headers)
        return data


def _sticker(sticker_id: str, url: str | None) -> tuple[InboundKind, dict[str, Any]]:
    item = Attachment(url=url, unique_id=sticker_id or None)
    data: tuple[tuple[str, str], ...] = (("sticker_id", sticker_id),) if sticker_id else ()
    if sticker_id in LIKE_STICKER_IDS:
        data += (("like", "true"),)  # the thumbs-up: a flow may read it as "ok", never as evidence
    return InboundKind.STICKER, {"attachments": (item,), "data": data}


def _coordinates(payload: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    coordinates = payload.get("coordinates")
    if not isinstance(coordinates, dict):
        return ()
    return tuple((name, str(coordinates[name])) for name in ("lat", "long") if name in coordinates)


def _require_success(data: Any, what: str) -> None:
    # subscribed_apps answers {"success": true}; messenger_profile answers {"result": "success"}.
    if not (
        isinstance(data, dict) and (data.get("success") is True or data.get("result") == "success")
    ):
        raise BadRequest(f"Graph API không xác nhận việc {what}.")


__all__ = [
    "CAPABILITIES",
    "DEFAULT_GET_STARTED",
    "DEFAULT_GRAPH_API",
    "GRAPH_API_VERSION",
    "LIKE_STICKER_IDS",
    "METADATA_PREFIX",
    "SIGNATURE_HEADER",
    "SUBSCRIBED_FIELDS",
    "Echo",
    "MessengerAdapter",
    "MessengerPage",
    "Parsed",
    "classify_error",
    "graph_root",
    "media_url_under",
]
