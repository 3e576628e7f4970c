"""The routes platforms call: webhooks, the Zalo OA authorisation, Zalo's domain verification.

The only module that handles requests from Meta, Zalo and Telegram. Every webhook does, in
order (DESIGN.md, "The pipeline"):

    read the raw body (at most MAX_BODY: 413)
    verify on the raw bytes (bad or missing signature / secret token: 403, nothing processed)
    parse (a malformed body after a valid signature: 200 and a warning, see below)
    pipeline.ingest every inbound (durable, de-duplicated by platform message id)
    acknowledge: 200

Nothing waits for the engine or for a platform before the answer: the pipeline's worker runs
in the background, Telegram's answerCallbackQuery and the Zalo echo check are background tasks.
If the store cannot take an inbound the request fails (5xx) and the platform retries it; what
was stored before is de-duplicated on that retry.

A body that verifies but does not parse is answered 200: the platform retries a failing
delivery for hours or days (Zalo, Telegram) and Meta unsubscribes the app after an hour of
failures, while a retry of the same bytes can never parse better. The adapter logs a warning.

    GET  /webhooks/messenger              Meta's verify handshake (hub.challenge)
    POST /webhooks/messenger              events of every Page, routed by page id
    POST /webhooks/zalo                   events of every OA of the Zalo app, routed by OA id
    POST /webhooks/zalobot/{district}     Zalo Bot API events of one district's bot
    POST /webhooks/telegram/{district}    Telegram updates of one district's bot (webhook mode)
    GET  /oauth/zalo/start                sends an OA admin to Zalo's consent page (PKCE, state)
    GET  /oauth/zalo/callback             stores the OA's first token pair
    GET  /zalo_verifier{code}.html        Zalo's domain verification file
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from flows.vocab import Channel, Inbound

if TYPE_CHECKING:
    from bots.channels import Channels
    from bots.runtime import Runtime

log = logging.getLogger("loa.webhooks")

MAX_BODY = 1024 * 1024  # bytes: platforms send small JSON; a larger body is refused (413)
STATE_COOKIE = "loa_zalo_oauth"
STATE_TTL = 15 * 60  # seconds an OA admin has between opening the start link and consenting
OK = "EVENT_RECEIVED"

_PAGE = """<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em">
<h1>{title}</h1><p>{text}</p></body></html>
"""


def _page(title: str, text: str, status: int = 200) -> web.Response:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text))
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


class TooLarge(Exception):
    pass


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refusing more than `limit` bytes (declared or streamed)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge()
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise TooLarge()
    return bytes(data)


class Webhooks:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def channels(self) -> Channels:
        channels = self.runtime.channels
        if channels is None:  # no district uses a messaging platform
            raise web.HTTPNotFound()
        return channels

    async def _ingest(self, inbounds: Iterable[Inbound]) -> int:
        channels = self.channels
        stored = 0
        for inbound in inbounds:
            if await channels.ingest(inbound):
                stored += 1
                channels.after_ingest(inbound)
        return stored

    async def _raw(self, request: web.Request) -> bytes:
        try:
            return await read_body(request)
        except TooLarge:
            log.warning("%s: body over %d bytes refused", request.path, MAX_BODY)
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=0) from None

    @staticmethod
    def _forbidden(request: web.Request, what: str) -> web.Response:
        log.warning("%s: %s; refused (from %s)", request.path, what, request.remote)
        return web.Response(status=403, text="forbidden")

    # -- Messenger ----------------------------------------------------------------------------

    async def messenger_handshake(self, request: web.Request) -> web.Response:
        adapter = self.channels.messenger
        if adapter is None:
            raise web.HTTPNotFound()
        challenge = adapter.verify_handshake(request.query)
        if challenge is None:
            return self._forbidden(request, "verify handshake with a wrong token")
        return web.Response(text=challenge, content_type="text/plain")

    async def messenger(self, request: web.Request) -> web.Response:
        from bots.takeover import pause_inbound

        adapter = self.channels.messenger
        if adapter is None:
            raise web.HTTPNotFound()
        body = await self._raw(request)
        if not adapter.verify(body, request.headers):
            return self._forbidden(request, "bad or missing X-Hub-Signature-256")
        parsed = adapter.parse_all(body)
        for warning in parsed.warnings:
            log.warning("%s", warning)
        await self._ingest(parsed.inbounds)
        for echo in parsed.echoes:
            if echo.by_human:
                await self._ingest(
                    [
                        pause_inbound(
                            echo.district, Channel.MESSENGER, echo.user_id, echo.mid,
                            echo.timestamp,
                        )
                    ]
                )
        return web.Response(text=OK)

    # -- Zalo OA ------------------------------------------------------------------------------

    async def zalo(self, request: web.Request) -> web.Response:
        channels = self.channels
        adapter = channels.zalo
        if adapter is None:
            raise web.HTTPNotFound()
        body = await self._raw(request)
        if not adapter.verify(body, request.headers):
            variant = adapter.diagnose_signature(
                body, request.headers, app_secret=channels.settings.zalo_app_secret
            )
            if variant is not None:  # names a rule, never a secret (channels.md §7)
                log.error("zalo: the signature follows rule %r, not the documented one", variant)
            return self._forbidden(request, "bad or missing X-ZEvent-Signature")
        await self._ingest(adapter.parse(body))
        for echo in adapter.parse_echoes(body):
            await channels.zalo_echo(echo)
        return web.Response(text=OK)

    # -- Zalo Bot -----------------------------------------------------------------------------

    async def zalobot(self, request: web.Request) -> web.Response:
        adapter = self.channels.zalobot.get(request.match_info["district"])
        if adapter is None:
            raise web.HTTPNotFound()
        body = await self._raw(request)
        if not adapter.verify(body, request.headers):
            return self._forbidden(request, "bad or missing X-Bot-Api-Secret-Token")
        await self._ingest(adapter.parse(body))
        return web.Response(text=OK)

    # -- Telegram -----------------------------------------------------------------------------

    async def telegram(self, request: web.Request) -> web.Response:
        channels = self.channels
        district = request.match_info["district"]
        bot, adapter = channels.telegram_bot(district), channels.telegram.get(district)
        if bot is None or adapter is None or bot.mode != "webhook":
            raise web.HTTPNotFound()  # polling bots take no webhooks
        body = await self._raw(request)
        if not adapter.verify(body, request.headers):
            return self._forbidden(request, "bad or missing X-Telegram-Bot-Api-Secret-Token")
        await self._ingest(adapter.parse(body))
        return web.Response()

    # -- Zalo OA authorisation ----------------------------------------------------------------

    def _state_key(self) -> bytes:
        return ("loa-zalo-oauth:" + self.channels.settings.zalo_app_secret).encode()

    def _sign(self, issued: int, nonce: str) -> str:
        message = f"{issued}.{nonce}".encode()
        return hmac.new(self._state_key(), message, hashlib.sha256).hexdigest()

    def _state_ok(self, state: str, cookie: str | None) -> bool:
        try:
            issued_text, nonce, signature = state.split(".", 2)
            issued = int(issued_text)
        except ValueError:
            return False
        if not 0 <= time.time() - issued <= STATE_TTL or not cookie:
            return False
        expected = self._sign(issued, nonce)
        return hmac.compare_digest(expected, signature) and hmac.compare_digest(nonce, cookie)

    async def zalo_start(self, request: web.Request) -> web.StreamResponse:
        from adapters.zalo import code_challenge, permission_url

        channels = self.channels
        settings = channels.settings
        if channels.zalo is None:
            raise web.HTTPNotFound()
        if not settings.zalo_code_verifier:
            return _page(
                "Chưa cấu hình cấp quyền Zalo",
                "Máy chủ chưa đặt LOA_ZALO_CODE_VERIFIER (xem docs/kenh-zalo.md, bước 3).",
                503,
            )
        nonce = secrets.token_urlsafe(16)
        issued = int(time.time())
        state = f"{issued}.{nonce}.{self._sign(issued, nonce)}"
        target = permission_url(
            settings.zalo_app_id,
            f"{settings.base_url}/oauth/zalo/callback",
            code_challenge(settings.zalo_code_verifier),
            state=state,
            oauth_base=settings.zalo_oauth,
        )
        response = web.Response(status=302, headers={"Location": target})
        response.set_cookie(
            STATE_COOKIE,
            nonce,
            max_age=STATE_TTL,
            path="/oauth/zalo",
            httponly=True,
            secure=settings.base_url.startswith("https://"),
            samesite="Lax",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def zalo_callback(self, request: web.Request) -> web.Response:
        from adapters.base import AdapterError
        from adapters.zalo import TokenRefused, exchange_code

        channels = self.channels
        settings, keeper = channels.settings, channels.zalo_keeper
        if channels.zalo is None or keeper is None:
            raise web.HTTPNotFound()
        query = request.query
        if not self._state_ok(query.get("state", ""), request.cookies.get(STATE_COOKIE)):
            return _page(
                "Liên kết cấp quyền đã hết hạn",
                "Bạn mở lại đường link cấp quyền của Loa (/oauth/zalo/start) trên cùng trình "
                "duyệt này rồi bấm «Cho phép» nhé.",
                400,
            )
        code, oa_id = query.get("code", ""), query.get("oa_id", "")
        known = {oa.oa_id: oa.district for oa in channels.config.zalo}
        if oa_id not in known:
            log.warning("zalo: authorisation for OA %r, which no district configures", oa_id)
            return _page(
                "OA này chưa được khai báo",
                f"Zalo OA {oa_id or '(không rõ)'} chưa có trong flows.yaml (channels: zalo: "
                "{oa_id: ...}) của đơn vị nào. Khai báo OA rồi cấp quyền lại.",
                400,
            )
        if not code:
            return _page("Chưa cấp quyền", "Zalo không gửi mã cấp quyền. Bạn thử lại nhé.", 400)
        try:
            pair = await exchange_code(
                channels.http_session(),
                settings.zalo_oauth,
                settings.zalo_app_id,
                settings.zalo_app_secret,
                code,
                code_verifier=settings.zalo_code_verifier,
            )
        except TokenRefused as error:
            log.warning("zalo: code exchange for OA %s refused: %s", oa_id, error)
            return _page(
                "Zalo không chấp nhận mã cấp quyền",
                "Mã cấp quyền đã dùng hoặc đã hết hạn. Bạn mở lại đường link cấp quyền nhé.",
                400,
            )
        except AdapterError as error:
            log.warning("zalo: code exchange for OA %s failed: %s", oa_id, error)
            return _page(
                "Chưa kết nối được Zalo", "Zalo chưa trả lời. Bạn thử lại sau ít phút nhé.", 502
            )
        await keeper.store_initial(oa_id, pair)
        response = _page(
            "Đã cấp quyền cho Loa",
            f"Zalo OA {oa_id} (đơn vị {known[oa_id]}) đã kết nối với Loa. "
            "Bạn có thể đóng trang này.",
        )
        response.del_cookie(STATE_COOKIE, path="/oauth/zalo")
        return response

    async def zalo_verifier(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        if code not in self.runtime.settings.zalo_site_verification:
            raise web.HTTPNotFound()
        from adapters.zalo import verifier_page

        return web.Response(text=verifier_page(code), content_type="text/html")


def add_routes(app: web.Application, runtime: Runtime) -> Webhooks:
    hooks = Webhooks(runtime)
    app.router.add_get("/webhooks/messenger", hooks.messenger_handshake)
    app.router.add_post("/webhooks/messenger", hooks.messenger)
    app.router.add_post("/webhooks/zalo", hooks.zalo)
    app.router.add_post("/webhooks/zalobot/{district}", hooks.zalobot)
    app.router.add_post("/webhooks/telegram/{district}", hooks.telegram)
    app.router.add_get("/oauth/zalo/start", hooks.zalo_start)
    app.router.add_get("/oauth/zalo/callback", hooks.zalo_callback)
    app.router.add_get("/zalo_verifier{code}.html", hooks.zalo_verifier)
    return hooks


def site_verification_meta(runtime: Runtime) -> str:
    """The `<meta>` tags Zalo looks for on the home page ('' when none are configured)."""
    codes = runtime.settings.zalo_site_verification
    if not codes:
        return ""
    from adapters.zalo import site_verification_meta as tags

    return tags(codes)


__all__ = ["MAX_BODY", "Webhooks", "add_routes", "read_body", "site_verification_meta"]
