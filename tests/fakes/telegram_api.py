"""A fake Telegram Bot API (the parts Loa uses) on a free 127.0.0.1 port.

It answers method calls sent as JSON, as a URL-encoded form or as multipart form data (aiogram
sends everything as multipart, with objects such as `reply_markup` JSON-encoded in a field),
checks the token, enforces the limits Telegram refuses with 400 (text 1–4,096 UTF-16 units,
caption ≤ 1,024, callback data ≤ 64 bytes), keeps an update queue for `getUpdates` with Telegram's
offset rule (asking with `offset` confirms, and forgets, every update below it), refuses
`getUpdates` with 409 while a webhook is set, serves files by `getFile` and
`/file/bot<token>/<path>`, and can be told to fail the next calls or to report webhook errors.

    async with FakeTelegramApi() as tg:
        transport = make_transport(tg.token, api_base=tg.url)
        tg.push_update({...})            # for getUpdates
        tg.fail_next(429, retry_after=3)
        tg.calls                         # (method, params) accepted, in order
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web

from tests.fakes.base import FakeServer

DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
    "to delete the webhook first",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
}
SEND_METHODS = ("sendMessage", "sendPhoto", "sendDocument")


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart call."""

    filename: str | None
    data: bytes


@dataclass
class _Scripted:
    code: int
    description: str
    retry_after: int | None = None
    methods: tuple[str, ...] = ()  # empty: any method


@dataclass
class Recorded:
    method: str
    token: str
    params: dict[str, Any] = field(default_factory=dict)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _refuse(
    code: int, description: str | None = None, retry_after: int | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "ok": False,
        "error_code": code,
        "description": description or DESCRIPTIONS.get(code, "Error"),
    }
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
        body["description"] = body["description"].format(retry_after=retry_after)
    return web.json_response(body, status=code)


def _decode(value: Any) -> Any:
    """Form fields hold objects as JSON text (`reply_markup`, `allowed_updates`)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def check_call(method: str, params: dict[str, Any]) -> str | None:
    """Why Telegram would refuse this call with 400, or None."""
    sends = method in SEND_METHODS or method == "sendChatAction"
    if sends and params.get("chat_id") in (None, ""):
        return "Bad Request: chat_id is empty"
    if method == "sendMessage":
        text = params.get("text")
        if not isinstance(text, str) or not 0 < _units(text) <= 4096:
            return "Bad Request: message text is empty" if not text else (
                "Bad Request: message is too long"
            )
    if method in ("sendPhoto", "sendDocument"):
        field_name = "photo" if method == "sendPhoto" else "document"
        if params.get(field_name) in (None, ""):
            return f"Bad Request: there is no {field_name} in the request"
        caption = params.get("caption")
        if isinstance(caption, str) and _units(caption) > 1024:
            return "Bad Request: message caption is too long"
    markup = params.get("reply_markup")
    if isinstance(markup, dict):
        for row in markup.get("inline_keyboard") or ():
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 0 < len(str(data).encode()) <= 64:
                    return "Bad Request: BUTTON_DATA_INVALID"
    if method == "answerCallbackQuery" and not params.get("callback_query_id"):
        return "Bad Request: query is too old and response timeout expired or query ID is invalid"
    return None


class FakeTelegramApi(FakeServer):
    client_max_size = 60 * 2**20  # uploads of local media

    def __init__(self, token: str = "123456789:FAKE-telegram-token_0001") -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.requests: list[Recorded] = []  # every call, answered or refused
        self.calls: list[tuple[str, dict[str, Any]]] = []  # accepted calls, in order
        self.uploads: list[tuple[str, Upload]] = []  # (method, file part) of multipart calls
        self.files: dict[str, bytes] = {}  # file_id → bytes (getFile + /file/...)
        self.file_requests: list[str] = []  # file paths downloaded, in order
        self.webhook: dict[str, Any] = {"url": ""}
        self.webhook_error: tuple[int, str] | None = None  # (date, message) for getWebhookInfo
        self._updates: deque[dict[str, Any]] = deque()
        self._arrived = asyncio.Event()
        self._script: deque[_Scripted] = deque()
        self._ids = itertools.count(1)
        self.confirmed_below = 0  # the highest offset a getUpdates call has confirmed

    # --- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        code: int,
        times: int = 1,
        *,
        retry_after: int | None = None,
        description: str | None = None,
        methods: tuple[str, ...] = (),
    ) -> None:
        """Refuse the next `times` calls (of `methods`, default any) with `code`."""
        for _ in range(times):
            text = description or DESCRIPTIONS.get(code, "Error")
            self._script.append(_Scripted(code, text, retry_after, methods))

    def push_update(self, update: dict[str, Any]) -> None:
        """Queue an update for getUpdates (its `update_id` must grow, as Telegram's do)."""
        self._updates.append(update)
        self._arrived.set()

    def add_file(self, file_id: str, data: bytes) -> None:
        self.files[file_id] = data

    @property
    def pending_updates(self) -> list[int]:
        return [u["update_id"] for u in self._updates]

    def sent(self, method: str | None = None) -> list[dict[str, Any]]:
        return [p for m, p in self.calls if (method is None and m in SEND_METHODS) or m == method]

    # --- lifecycle -------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._call)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)

    def on_close(self) -> None:
        self._arrived.set()

    # --- handlers --------------------------------------------------------------------------

    async def _params(self, request: web.Request, method: str) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST":
            return params
        ctype = request.content_type
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                data = await part.read()
                if part.filename is not None:
                    upload = Upload(part.filename, bytes(data))
                    self.uploads.append((method, upload))
                    params[part.name or ""] = upload
                else:
                    params[part.name or ""] = _decode(data.decode())
        elif ctype == "application/x-www-form-urlencoded":
            raw = await request.read()
            params.update({k: _decode(v) for k, v in parse_qsl(raw.decode())})
        else:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    params.update(body)
        for name, value in list(params.items()):  # aiogram names its uploads attach://<part>
            if isinstance(value, str) and value.startswith("attach://"):
                params[name] = params.pop(value.removeprefix("attach://"), value)
        for name in ("chat_id", "offset", "timeout", "limit"):
            value = params.get(name)
            if isinstance(value, str) and value.lstrip("-").isdigit():
                params[name] = int(value)
        return params

    async def _call(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        params = await self._params(request, method)
        self.requests.append(Recorded(method, token, params))
        if token != self.token:
            return _refuse(401)
        if self._script and (not self._script[0].methods or method in self._script[0].methods):
            scripted = self._script.popleft()
            return _refuse(scripted.code, scripted.description, scripted.retry_after)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _refuse(404)
        problem = check_call(method, params)
        if problem:
            return _refuse(400, problem)
        result = await handler(params)
        if isinstance(result, web.Response):
            return result
        self.calls.append((method, params))
        return web.json_response({"ok": True, "result": result})

    def _message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        return {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Loa (FAKE)"},
            **content,
        }

    async def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Loa", "username": "LoaFakeBot"}

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._message(params, text=params["text"])

    async def _m_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        n = next(self._ids)
        photo = [{"file_id": f"photo-{n}", "file_unique_id": f"u{n}", "width": 10, "height": 10}]
        content: dict[str, Any] = {"photo": photo}
        if params.get("caption"):
            content["caption"] = params["caption"]
        return self._message(params, **content)

    async def _m_sendDocument(self, params: dict[str, Any]) -> dict[str, Any]:
        n = next(self._ids)
        return self._message(params, document={"file_id": f"doc-{n}", "file_unique_id": f"d{n}"})

    async def _m_sendChatAction(self, params: dict[str, Any]) -> bool:
        return True

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        return True

    async def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {"url": str(params.get("url") or ""), **params}
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {"url": ""}
        if params.get("drop_pending_updates") in (True, "true", "True"):
            self._updates.clear()
        return True

    async def _m_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self.webhook_error
        return info

    async def _m_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id") or "")
        data = self.files.get(file_id)
        if data is None:
            return _refuse(400, "Bad Request: wrong file_id or the file is temporarily unavailable")
        return {
            "file_id": file_id,
            "file_unique_id": f"unique-{file_id[:16]}",
            "file_size": len(data),
            "file_path": f"photos/{file_id}.jpg",
        }

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        if self.webhook.get("url"):
            return _refuse(409)
        offset = params.get("offset")
        if isinstance(offset, int):
            self.confirmed_below = max(self.confirmed_below, offset)
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if not self._updates and timeout > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        return list(itertools.islice(self._updates, limit))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        self.file_requests.append(path)
        file_id = path.removeprefix("photos/").removesuffix(".jpg")
        data = self.files.get(file_id)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/jpeg")
