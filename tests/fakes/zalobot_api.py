"""A fake Zalo Bot API (`/bot<TOKEN>/<method>`) on a free 127.0.0.1 port.

It records every request, checks the bot token, enforces the documented limits (text 1–2,000
characters, photo by URL, caption ≤ 2,000) and can be told to answer the next requests with an
`{"ok": false}` error, an HTTP status, or a delay.

It also keeps the bot's webhook: `setWebhook` (`url`, `secret_token` of 8–256 characters →
`{url, updated_at}`), `deleteWebhook` and `getWebhookInfo`. The research documents no shape for
`getWebhookInfo`'s result, so it answers Telegram's (`url`, `pending_update_count`,
`last_error_date`, `last_error_message`) plus the `updated_at` that `setWebhook` returns, with
times in milliseconds like every other Zalo Bot time (assumption written in docs/kenh-zalo.md).
`webhook_error = (date_ms, message)` makes it report a delivery error.

    async with FakeZaloBotApi(token="123:abc") as bot:
        adapter = ZaloBotAdapter("tan-phu", token="123:abc", api_base=bot.url, ...)
        bot.fail_next(429, retry_after=3)
        bot.calls  # (method, body) of accepted sends, in order (webhook methods: `requests`)
        bot.webhook = {"url": "https://loa.example.vn/webhooks/zalobot/tan-phu"}
        bot.webhook_error = (int(time.time() * 1000) - 60_000, "Connection timed out")
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

from aiohttp import web

from tests.fakes.base import FakeServer

DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: user has blocked the bot",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


@dataclass(frozen=True)
class Recorded:
    method: str  # the Bot-API method, e.g. "sendMessage"
    token: str
    body: Any


@dataclass
class _Scripted:
    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _refuse(code: int, description: str | None = None, status: int = 200) -> web.Response:
    body = {"ok": False, "error_code": code, "description": description or DESCRIPTIONS[code]}
    return web.json_response(body, status=status)


def check_call(method: str, body: Any) -> str | None:
    """Why the Bot API would refuse this call (error 400), or None."""
    if not isinstance(body, dict) or not body.get("chat_id"):
        return "chat_id is required"
    if method == "sendMessage":
        text = body.get("text")
        if not isinstance(text, str) or not 0 < _units(text) <= 2000:
            return "text must be 1 to 2000 characters"
    elif method == "sendPhoto":
        if not str(body.get("photo") or "").startswith(("http://", "https://")):
            return "photo must be a URL"
        if _units(str(body.get("caption") or "")) > 2000:
            return "caption must be at most 2000 characters"
    return None


class FakeZaloBotApi(FakeServer):
    METHODS = ("sendMessage", "sendPhoto", "sendSticker", "sendChatAction", "getMe")
    WEBHOOK_METHODS = ("setWebhook", "deleteWebhook", "getWebhookInfo")

    def __init__(self, token: str = "1234567890:fake-zalobot-token") -> None:
        self.token = token
        self.webhook: dict[str, Any] = {"url": ""}  # what setWebhook stored
        self.webhook_error: tuple[int, str] | None = None  # (date in ms, message)
        self.pending = 0  # pending_update_count in getWebhookInfo
        self.requests: list[Recorded] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []  # accepted, in order
        self._script: deque[_Scripted] = deque()
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()

    # --- scripting ---------------------------------------------------------------------------

    def fail_next(
        self, code: int, times: int = 1, *, retry_after: int | None = None, status: int = 200
    ) -> None:
        """Answer the next `times` calls with `{"ok": false, "error_code": code}`."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": code,
            "description": DESCRIPTIONS.get(code, "Error"),
        }
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        for _ in range(times):
            self._script.append(_Scripted(status, body))

    def answer_next(self, status: int, body: Any = None) -> None:
        """Answer the next call with exactly this (bytes are sent as is)."""
        self._script.append(_Scripted(status, body))

    def delay_next(self, seconds: float) -> None:
        self._script.append(_Scripted(delay=seconds))

    # --- lifecycle ---------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/bot{token}/{method}", self._call)

    def on_close(self) -> None:
        self._closing.set()

    # --- handler -----------------------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(Recorded(method, token, body))
        if self._script:
            scripted = self._script.popleft()
            if scripted.delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), scripted.delay)
            elif isinstance(scripted.body, bytes):
                return web.Response(status=scripted.status, body=scripted.body)
            else:
                return web.json_response(scripted.body, status=scripted.status)
        if token != self.token:
            return _refuse(401, status=401)
        if method in self.WEBHOOK_METHODS:
            return self._webhook_method(method, body if isinstance(body, dict) else {})
        if method not in self.METHODS:
            return _refuse(404, status=404)
        problem = check_call(method, body)
        if problem:
            return _refuse(400, problem, status=400)
        assert isinstance(body, dict)
        self.calls.append((method, body))
        result = {"message_id": f"{next(self._ids):020x}", "date": int(time.time() * 1000)}
        return web.json_response({"ok": True, "result": result})

    def _webhook_method(self, method: str, body: dict[str, Any]) -> web.Response:
        now = int(time.time() * 1000)
        if method == "setWebhook":
            url, secret = str(body.get("url") or ""), str(body.get("secret_token") or "")
            if not url.startswith("https://"):
                return _refuse(400, "url must be an HTTPS URL", status=400)
            if not 8 <= len(secret) <= 256:
                return _refuse(400, "secret_token must be 8 to 256 characters", status=400)
            self.webhook = {"url": url, "secret_token": secret, "updated_at": now}
            self.webhook_error = None
            return web.json_response({"ok": True, "result": {"url": url, "updated_at": now}})
        if method == "deleteWebhook":
            self.webhook = {"url": "", "updated_at": now}
            return web.json_response({"ok": True, "result": True})
        info: dict[str, Any] = {
            "url": str(self.webhook.get("url") or ""),
            "pending_update_count": self.pending,
        }
        if self.webhook.get("updated_at") is not None:
            info["updated_at"] = self.webhook["updated_at"]
        if self.webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self.webhook_error
        return web.json_response({"ok": True, "result": info})
