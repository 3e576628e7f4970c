"""A fake Meta Graph API (the parts Loa uses) on a free 127.0.0.1 port.

It records every request, checks the Page token (and `appsecret_proof` when given the app
secret), enforces the Send API limits Meta rejects with error 100, and can be told to answer the
next requests with any error class, an HTTP 429/5xx, or a delay (for timeouts).

    async with FakeGraphApi(tokens={"page-token"}, app_secret="s") as graph:
        adapter = MessengerAdapter(..., graph_api=graph.url)
        graph.fail_next("outside_window")
        ...
        graph.messages  # the `message` objects accepted, in order
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer

VERSION = "v25.0"

# name → (HTTP status, Graph `error` object); shapes as Meta sends them.
ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "outside_window": (
        400,
        {
            "message": "(#10) This message is sent outside of allowed window.",
            "type": "OAuthException",
            "code": 10,
            "error_subcode": 2018278,
        },
    ),
    "unreachable": (
        400,
        {
            "message": "(#551) This person isn't available right now.",
            "type": "OAuthException",
            "code": 551,
            "error_subcode": 1545041,
        },
    ),
    "no_matching_user": (
        400,
        {
            "message": "(#100) No matching user found",
            "type": "OAuthException",
            "code": 100,
            "error_subcode": 2018001,
        },
    ),
    "invalid_token": (
        400,
        {
            "message": "Error validating access token: The session has been invalidated.",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 460,
        },
    ),
    "permission": (
        403,
        {
            "message": "(#200) Requires pages_messaging permission to manage the object",
            "type": "OAuthException",
            "code": 200,
        },
    ),
    "no_send_permission": (
        400,
        {
            "message": "(#10) Application does not have permission for this action",
            "type": "OAuthException",
            "code": 10,
        },
    ),
    "page_restricted": (
        400,
        {
            "message": "(#10) Page temporarily restricted from sending messages.",
            "type": "OAuthException",
            "code": 10,
            "error_subcode": 1893063,
        },
    ),
    "bad_request": (
        400,
        {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100},
    ),
    "rate_limited": (
        400,
        {
            "message": "(#613) Calls to this api have exceeded the rate limit.",
            "type": "OAuthException",
            "code": 613,
        },
    ),
    "temporary": (
        500,
        {
            "message": "An unexpected error has occurred. Please retry your request later.",
            "type": "OAuthException",
            "code": 2,
            "is_transient": True,
        },
    ),
    "send_failure": (
        400,
        {
            "message": "(#1200) Temporary send message failure.",
            "type": "OAuthException",
            "code": 1200,
        },
    ),
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # e.g. "/v25.0/me/messages"
    query: dict[str, str]
    body: Any  # decoded JSON, None when empty


@dataclass
class _Scripted:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def _error(status: int, message: str, code: int = 100, **extra: Any) -> web.Response:
    error = {"message": message, "type": "OAuthException", "code": code, **extra}
    return web.json_response({"error": error}, status=status)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def check_message(message: Any) -> str | None:
    """Why Meta would refuse this Send API `message` (error 100), or None."""
    if not isinstance(message, dict):
        return "(#100) param message must be an object"
    has_text, has_attachment = "text" in message, "attachment" in message
    if has_text == has_attachment:
        return "(#100) message must have exactly one of text or attachment"
    if has_text and not 0 < _units(message["text"]) <= 2000:
        return "(#100) Length of param message[text] must be less than or equal to 2000"
    if has_attachment:
        attachment = message["attachment"]
        payload = attachment.get("payload") or {}
        if attachment.get("type") == "template":
            buttons = payload.get("buttons") or []
            if not 1 <= len(buttons) <= 3:
                return "(#100) param buttons must have 1 to 3 elements"
            if not 0 < _units(payload.get("text") or "") <= 640:
                return "(#100) Length of param text must be less than or equal to 640"
            for button in buttons:
                if (
                    button.get("type") == "postback"
                    and not 0 < len(button.get("payload", "")) <= 1000
                ):
                    return "(#100) param payload must be 1 to 1000 characters"
        elif attachment.get("type") in ("image", "file", "audio", "video"):
            url = payload.get("url", "")
            if not url.startswith(("http://", "https://")):
                return "(#100) param url must be a valid URL"
        else:
            return "(#100) Invalid attachment type"
    quick_replies = message.get("quick_replies")
    if quick_replies is not None:
        if not 0 < len(quick_replies) <= 13:
            return "(#100) param quick_replies must be an array of 1 to 13 elements"
        for reply in quick_replies:
            if reply.get("content_type") == "text" and not reply.get("title"):
                return "(#100) Quick reply title is required"
            if not 0 < len(reply.get("payload", "")) <= 1000:
                return "(#100) param payload must be 1 to 1000 characters"
    if len(message.get("metadata", "")) > 1000:
        return "(#100) Length of param metadata must be less than or equal to 1000"
    return None


class FakeGraphApi(FakeServer):
    def __init__(self, tokens: Iterable[str] = (), app_secret: str | None = None) -> None:
        """`tokens`: the valid Page tokens (empty: any token passes). `app_secret`: when given,
        `appsecret_proof` must be HMAC-SHA256(app secret, token) as Meta checks it."""
        self.tokens = set(tokens)
        self.app_secret = app_secret
        self.requests: list[Recorded] = []  # every request, answered or refused
        self.delivered: list[tuple[str, dict[str, Any]]] = []  # (recipient, message) accepted
        self.profiles: dict[str, dict[str, Any]] = {}  # token → messenger profile
        self.subscriptions: dict[str, list[str]] = {}  # page id → subscribed fields
        self.app_id = "999999999999999"
        self._script: deque[_Scripted] = deque()
        self._mids = itertools.count(1)
        self._closing = asyncio.Event()

    # --- scripting -------------------------------------------------------------------------

    def fail_next(self, name: str, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` requests with the named error of `ERRORS`."""
        status, error = ERRORS[name]
        for _ in range(times):
            self._script.append(_Scripted(status, {"error": error}, dict(headers or {})))

    def answer_next(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next request with exactly this (e.g. 429, or a 503 HTML page as bytes)."""
        self._script.append(_Scripted(status, body, dict(headers or {})))

    def delay_next(self, seconds: float) -> None:
        """Hold the next request this long before answering normally (to cause timeouts)."""
        self._script.append(_Scripted(delay=seconds))

    # --- what was received -------------------------------------------------------------------

    @property
    def sends(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/me/messages")]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The `message` objects the Send API accepted (delivered), in order."""
        return [message for _recipient, message in self.delivered]

    # --- lifecycle ---------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post(f"/{VERSION}/me/messages", self._messages)
        app.router.add_post(f"/{VERSION}/me/messenger_profile", self._profile)
        app.router.add_post(f"/{VERSION}/{{page_id}}/subscribed_apps", self._subscribe)
        app.router.add_get(f"/{VERSION}/{{page_id}}/subscribed_apps", self._subscriptions)

    def on_close(self) -> None:
        self._closing.set()

    # --- handlers ----------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> tuple[Recorded, web.Response | None]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = Recorded(request.method, request.path, dict(request.query), body)
        self.requests.append(recorded)
        if self._script:
            scripted = self._script.popleft()
            if scripted.delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), scripted.delay)
            elif isinstance(scripted.body, bytes):
                return recorded, web.Response(
                    status=scripted.status, body=scripted.body, headers=scripted.headers
                )
            else:
                return recorded, web.json_response(
                    scripted.body, status=scripted.status, headers=scripted.headers
                )
        return recorded, self._auth_error(recorded)

    def _auth_error(self, recorded: Recorded) -> web.Response | None:
        token = recorded.query.get("access_token", "")
        if not token or (self.tokens and token not in self.tokens):
            return _error(400, "Invalid OAuth access token - Cannot parse access token", 190)
        if self.app_secret is not None:
            proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if recorded.query.get("appsecret_proof") != proof:
                return _error(400, "Invalid appsecret_proof provided in the API argument")
        return None

    async def _messages(self, request: web.Request) -> web.Response:
        recorded, answer = await self._record(request)
        if answer is not None:
            return answer
        body = recorded.body if isinstance(recorded.body, dict) else {}
        recipient = (body.get("recipient") or {}).get("id")
        if not recipient:
            return _error(400, "(#100) The parameter recipient is required")
        if body.get("messaging_type") not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            return _error(
                400, "(#100) param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}"
            )
        problem = check_message(body.get("message"))
        if problem:
            return _error(400, problem)
        self.delivered.append((recipient, body["message"]))
        return web.json_response(
            {"recipient_id": recipient, "message_id": f"m_fake_{next(self._mids)}"}
        )

    async def _profile(self, request: web.Request) -> web.Response:
        recorded, answer = await self._record(request)
        if answer is not None:
            return answer
        body = recorded.body if isinstance(recorded.body, dict) else {}
        if "persistent_menu" in body and "get_started" not in body:
            return _error(
                400,
                "(#100) You must set a Get Started button if you also wish to use persistent menu.",
            )
        self.profiles.setdefault(recorded.query["access_token"], {}).update(body)
        return web.json_response({"result": "success"})

    async def _subscribe(self, request: web.Request) -> web.Response:
        recorded, answer = await self._record(request)
        if answer is not None:
            return answer
        fields = [f for f in recorded.query.get("subscribed_fields", "").split(",") if f]
        if not fields:
            return _error(400, "(#100) The parameter subscribed_fields is required")
        self.subscriptions[request.match_info["page_id"]] = fields
        return web.json_response({"success": True})

    async def _subscriptions(self, request: web.Request) -> web.Response:
        _recorded, answer = await self._record(request)
        if answer is not None:
            return answer
        fields = self.subscriptions.get(request.match_info["page_id"])
        apps = (
            [
                {
                    "category": "Business",
                    "name": "Loa",
                    "id": self.app_id,
                    "subscribed_fields": fields,
                }
            ]
            if fields
            else []
        )
        return web.json_response({"data": apps})
