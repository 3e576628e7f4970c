"""A fake Zalo OA Open API (v3 consultation messages) and OAuth v4 server on a free 127.0.0.1 port.

It records every request, checks the `access_token` header, enforces the limits Zalo rejects
with `-201` (text ≤ 2,000 characters, ≤ 5 buttons, media by URL), rotates single-use refresh
tokens like Zalo does (a spent refresh token, and the access token it replaced, stop working),
and can be told to answer the next requests with any error code, an HTTP status, or a delay.

    async with FakeZaloApi(app_id="1", app_secret="s") as zalo:
        access, refresh = zalo.grant("oa-id")
        adapter = ZaloAdapter(..., api_base=zalo.url)
        zalo.fail_next(-230)
        zalo.messages  # the `message` objects accepted, in order

OAuth lives under `zalo.oauth_url` (`.../v4/oa`), as `LOA_ZALO_OAUTH` would point there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.base import FakeServer

MESSAGE_PATH = "/v3.0/oa/message/cs"
TOKEN_PATH = "/v4/oa/access_token"

# Zalo's messages for the codes tests use (as the error table transcribes them).
ERROR_MESSAGES: dict[int, str] = {
    -32: "Exceeded the rate limit",
    -100: "Unknown error",
    -201: "Parameters are invalid",
    -209: "App is not activated",
    -210: "Parameter exceeds the limit",
    -211: "Out of quota",
    -212: "OA has not registered this API",
    -213: "User has not followed the OA",
    -216: "Access token is invalid",
    -217: "User has blocked invitations from the OA",
    -218: "Out of quota for receiving",
    -220: "Access token has expired or been removed",
    -221: "OA must be verified",
    -223: "OA has not granted permission for this API",
    -224: "OA package must be upgraded",
    -227: "User is banned or has been inactive for more than 45 days",
    -230: "User has not interacted with the OA in the past 7 days",
    -232: "User has not interacted or the interaction has expired",
    -233: "Message type is not appropriate",
    -234: "Cannot send promotional messages at night",
    -240: "MessageV2 API has been shut down",
    -242: "appsecret_proof is invalid",
    -244: "User has restricted this type of message",
    -248: "Message content violates the policy",
    -320: "Zalo Cloud Account is missing",
    -321: "Zalo Cloud Account is out of money",
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # decoded JSON, or the form as a dict, None when empty


@dataclass
class _Scripted:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _error(code: int, message: str | None = None) -> web.Response:
    # Zalo reports application errors with HTTP 200
    return web.json_response({"error": code, "message": message or ERROR_MESSAGES.get(code, "")})


def check_message(message: Any) -> str | None:
    """Why Zalo would refuse this `/v3.0/oa/message/cs` `message` (error -201), or None."""
    if not isinstance(message, dict):
        return "message is required"
    text = message.get("text")
    attachment = message.get("attachment")
    if text is None and attachment is None:
        return "message must have text or attachment"
    if text is not None and not 0 < _units(text) <= 2000:
        return "text length must be from 1 to 2000"
    if attachment is not None:
        if attachment.get("type") != "template":
            return "attachment type is invalid"
        payload = attachment.get("payload") or {}
        if "buttons" in payload:
            buttons = payload["buttons"]
            if text is None:
                return "text is required with buttons"
            if not 1 <= len(buttons) <= 5:
                return "buttons must have 1 to 5 elements"
            for button in buttons:
                if button.get("type") not in ("oa.query.show", "oa.query.hide", "oa.open.url"):
                    return "button type is invalid"
                if not 0 < len(button.get("title") or "") <= 100:
                    return "button title is invalid"
                if not 0 < len(str(button.get("payload") or "")) <= 1000:
                    return "button payload is invalid"
        elif payload.get("template_type") == "media":
            elements = payload.get("elements") or []
            if len(elements) != 1:
                return "media template must have one element"
            element = elements[0]
            if ("url" in element) == ("attachment_id" in element):
                return "element must have exactly one of url or attachment_id"
            if "url" in element and not str(element["url"]).startswith(("http://", "https://")):
                return "url is invalid"
        else:
            return "template is invalid"
    return None


class FakeZaloApi(FakeServer):
    def __init__(self, app_id: str = "1111111111111111111", app_secret: str = "fake-app-secret"):
        self.app_id = app_id
        self.app_secret = app_secret
        self.requests: list[Recorded] = []
        self._accepted: list[dict[str, Any]] = []
        self.access: dict[str, str] = {}  # valid access token → OA id
        self.refresh: dict[str, str] = {}  # unspent refresh token → OA id
        self.codes: dict[str, tuple[str, str | None]] = {}  # code → (OA id, PKCE challenge)
        self._script: dict[str, deque[_Scripted]] = {MESSAGE_PATH: deque(), TOKEN_PATH: deque()}
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()

    @property
    def oauth_url(self) -> str:
        return self.url + "/v4/oa"

    # --- tokens ------------------------------------------------------------------------------

    def grant(self, oa_id: str) -> tuple[str, str]:
        """Mint an (access, refresh) pair for an OA, as the API Explorer or a consent does."""
        n = next(self._ids)
        access, refresh = f"access-{oa_id}-{n}", f"refresh-{oa_id}-{n}"
        self.access[access] = oa_id
        self.refresh[refresh] = oa_id
        return access, refresh

    def issue_code(self, oa_id: str, code_verifier: str | None = None) -> str:
        """An authorisation code as the consent redirect brings it (single use)."""
        code = f"code-{oa_id}-{next(self._ids)}"
        challenge = None
        if code_verifier is not None:
            digest = hashlib.sha256(code_verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        self.codes[code] = (oa_id, challenge)
        return code

    def revoke(self, access_token: str) -> None:
        self.access.pop(access_token, None)

    # --- scripting ---------------------------------------------------------------------------

    def fail_next(self, code: int, times: int = 1, *, path: str = MESSAGE_PATH) -> None:
        """Answer the next `times` requests to `path` with Zalo error `code` (HTTP 200)."""
        body = {"error": code, "message": ERROR_MESSAGES.get(code, "Error")}
        for _ in range(times):
            self._script[path].append(_Scripted(200, body))

    def answer_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        path: str = MESSAGE_PATH,
    ) -> None:
        """Answer the next request to `path` with exactly this (a 503 page as bytes, ...)."""
        self._script[path].append(_Scripted(status, body, dict(headers or {})))

    def delay_next(self, seconds: float, *, path: str = MESSAGE_PATH) -> None:
        """Hold the next request this long before answering normally (to cause timeouts)."""
        self._script[path].append(_Scripted(delay=seconds))

    # --- what was received -------------------------------------------------------------------

    @property
    def sends(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == MESSAGE_PATH]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The `message` objects Zalo accepted, in order."""
        return list(self._accepted)

    # --- lifecycle ---------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post(MESSAGE_PATH, self._message)
        app.router.add_post(TOKEN_PATH, self._token)

    def on_close(self) -> None:
        self._closing.set()

    # --- handlers ----------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> tuple[Recorded, web.Response | None]:
        raw = await request.read()
        body: Any = None
        if raw:
            if request.content_type == "application/x-www-form-urlencoded":
                body = dict(parse_qsl(raw.decode()))
            else:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
        recorded = Recorded(request.method, request.path, dict(request.headers), body)
        self.requests.append(recorded)
        script = self._script.get(request.path)
        if script:
            scripted = script.popleft()
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
        return recorded, None

    async def _message(self, request: web.Request) -> web.Response:
        recorded, answer = await self._record(request)
        if answer is not None:
            return answer
        token = recorded.headers.get("access_token", "")
        if token not in self.access:
            return _error(-216)
        body = recorded.body if isinstance(recorded.body, dict) else {}
        user_id = (body.get("recipient") or {}).get("user_id")
        if not user_id:
            return _error(-201, "recipient.user_id is required")
        problem = check_message(body.get("message"))
        if problem:
            return _error(-201, problem)
        self._accepted.append(body["message"])
        message_id = f"{next(self._ids):020x}"
        return web.json_response(
            {
                "data": {"message_id": message_id, "user_id": user_id},
                "error": 0,
                "message": "Success",
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        recorded, answer = await self._record(request)
        if answer is not None:
            return answer
        form = recorded.body if isinstance(recorded.body, dict) else {}
        if recorded.headers.get("secret_key") != self.app_secret:
            return web.json_response({"error": -14002, "error_name": "Invalid secret key"})
        if form.get("app_id") != self.app_id:
            return web.json_response({"error": -14001, "error_name": "Invalid app id"})
        grant = form.get("grant_type")
        if grant == "refresh_token":
            oa_id = self.refresh.pop(form.get("refresh_token", ""), None)  # single use
            if oa_id is None:
                return web.json_response(
                    {
                        "error": -14014,
                        "error_name": "Invalid refresh token",
                        "error_description": "Refresh token is invalid or has been used",
                    }
                )
            # the access tokens issued before stop working at the same moment
            for access, owner in list(self.access.items()):
                if owner == oa_id:
                    del self.access[access]
        elif grant == "authorization_code":
            entry = self.codes.pop(form.get("code", ""), None)
            if entry is None:
                return web.json_response({"error": -14019, "error_name": "Invalid code"})
            oa_id, challenge = entry
            if challenge is not None:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                    return web.json_response({"error": -14020, "error_name": "Invalid verifier"})
        else:
            return web.json_response({"error": -14003, "error_name": "Invalid grant type"})
        access, refresh = self.grant(oa_id)
        return web.json_response(
            {"access_token": access, "refresh_token": refresh, "expires_in": "90000"}
        )
