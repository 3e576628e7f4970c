"""The aiohttp application: the browser chat, its JSON API, media, health.

The only module that touches aiohttp's web server. Handlers are thin: they check the request,
hand an `Inbound` to the pipeline (which stores it durably before we answer) and read the outbox.

    GET  /                      the chat page (bots/web/index.html)
    GET  /static/{name}         its script and stylesheet
    GET  /chat/config           districts, the default one, session TTL, upload limit
    POST /chat/send             {user, district, id, text | payload | start, ref} → 202
    POST /chat/upload           multipart: user, district, id, file (an image) → 202
    GET  /chat/messages         ?user&district&after=<seq>&wait=<s≤25>: the bot's replies after
                                a cursor (long-poll); asking confirms everything up to `after`
    GET  /media/{sha256.ext}    the flows' sample images (never evidence)
    GET  /healthz               {ok, store, flows, pending, processed, process, pid}
    /webhooks/…, /oauth/zalo/…  the messaging platforms' routes (bots/webhooks.py)
    GET  /metrics               Prometheus metrics (bots/ops/metrics.py)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from adapters.webchat import WebchatInputError
from bots.bundles import content_type
from bots.certificates.issue import media_path
from bots.certificates.mail import SmtpSettings
from bots.console import ConsoleDeps, console_tick, ensure_first_admin, mount_console
from bots.console.handover import send_through_inbox
from bots.console.tree import OrgTree, load_org_tree
from bots.images import MAX_BYTES, TOO_LARGE, ImageRejected
from bots.pipeline import decode_outbound
from bots.runtime import Runtime
from bots.verify import PublicDeps, add_public_routes
from bots.webhooks import add_routes as add_webhook_routes
from bots.webhooks import site_verification_meta
from flows.compiler import CompiledBundle
from flows.vocab import Inbound

log = logging.getLogger("loa.server")

WEB = Path(__file__).with_name("web")
STATIC = {"chat.js": "text/javascript", "chat.css": "text/css"}
LONG_POLL = 25.0  # seconds: below the idle timeouts of common proxies and phone networks
RECHECK = 2.0  # seconds between store reads while long-polling (replies made by another process)
MAX_JSON = 64 * 1024
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
CONSOLE_TICK = 60.0  # seconds between runs of the console's periodic work

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status)


# -- pages ---------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    meta = site_verification_meta(request.app[RUNTIME])
    if meta:  # Zalo verifies the domain by a <meta> tag on the home page
        page = (WEB / "index.html").read_text("utf-8").replace("<head>", f"<head>\n{meta}", 1)
        return web.Response(body=page.encode(), headers=headers)
    return web.FileResponse(WEB / "index.html", headers=headers)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = STATIC.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    return web.FileResponse(
        WEB / name,
        headers={
            "Content-Type": f"{kind}; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def media(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    runtime = request.app[RUNTIME]
    path = runtime.media.path(name)
    if path is None:
        # An issued certificate (bots/certificates/issue.py): it names a person, so it is kept
        # by no shared cache, and a PDF downloads with a readable file name.
        certificate = media_path(runtime.certificate_files, name)
        if certificate is None:
            raise web.HTTPNotFound()
        headers = {
            "Content-Type": content_type(name),
            "Cache-Control": "private, max-age=86400",
            "X-Content-Type-Options": "nosniff",
            "X-Robots-Tag": "noindex",
        }
        if name.endswith(".pdf"):
            headers["Content-Disposition"] = 'attachment; filename="giay-chung-nhan.pdf"'
        return web.FileResponse(certificate, headers=headers)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type(name),
            # Named by content: the bytes behind a name never change.
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        pending = await runtime.pending_count()
    except Exception as error:  # the store is down: say so, with a status a probe understands
        log.warning("health check: store unavailable: %s", error)
        return _json({"ok": False, "store": runtime.store_kind, "error": str(error)}, 503)
    return _json(
        {
            "ok": True,
            "store": runtime.store_kind,
            "flows": runtime.version,
            "pending": pending,
            "processed": runtime.pipeline.processed,
            # Which of `loa serve --processes N` answered (bots/supervisor.py); 0 when alone.
            "process": runtime.settings.process_index or 0,
            "pid": os.getpid(),
        }
    )


# -- the chat API --------------------------------------------------------------------------------


async def chat_config(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    districts = [{"slug": slug, "name": name} for slug, name in runtime.districts]
    return _json(
        {
            "districts": districts,
            "default": districts[0]["slug"] if districts else None,
            "ttl": int(runtime.settings.session_ttl),
            "maxUpload": MAX_BYTES,
        }
    )


async def chat_send(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    webchat = runtime.webchat
    if request.content_length is not None and request.content_length > MAX_JSON:
        return _error("Tin nhắn quá dài.", 413)
    body = await request.read()
    if len(body) > MAX_JSON:
        return _error("Tin nhắn quá dài.", 413)
    if not webchat.verify(body, request.headers):
        return _error("Yêu cầu không hợp lệ.", 415)
    try:
        inbounds = webchat.parse(body)
    except WebchatInputError as error:
        return _error(str(error))
    duplicate = False
    for inbound in inbounds:
        duplicate = not await runtime.pipeline.ingest(inbound) or duplicate
    return _json({"ok": True, "duplicate": duplicate}, 202)


async def chat_upload(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    webchat = runtime.webchat
    # Multipart overhead on top of the image itself stays well under 64 KB.
    if request.content_length is not None and request.content_length > MAX_BYTES + MAX_JSON:
        return _error(TOO_LARGE, 413)
    if not request.content_type.startswith("multipart/"):
        return _error("Yêu cầu không hợp lệ.", 415)
    fields: dict[str, str] = {}
    data: bytes | None = None
    filename: str | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                filename = part.filename
                buffer = bytearray()
                while chunk := await part.read_chunk(64 * 1024):
                    buffer += chunk
                    if len(buffer) > MAX_BYTES:
                        return _error(TOO_LARGE, 413)
                data = bytes(buffer)
            elif part.name in ("user", "district", "id"):
                raw = await part.read_chunk(1024)
                fields[part.name] = raw.decode("utf-8", "replace").strip()
            else:
                await part.release()
    except (ValueError, AssertionError, asyncio.IncompleteReadError):
        return _error("Tệp tải lên không hoàn chỉnh, bạn thử gửi lại nhé.")
    try:
        user, district, message_id = webchat.identify(fields)
        if data is None:
            raise ImageRejected("Bạn chưa chọn ảnh nào.")
        sha256, checked = await runtime.store_image(data)
    except (WebchatInputError, ImageRejected) as error:
        return _error(str(error))
    key = webchat.key(user, district)
    name = filename[:120] if filename else None
    inbound = webchat.image_inbound(key, message_id, sha256, checked.mime, checked.size, name)
    duplicate = not await runtime.pipeline.ingest(inbound)
    return _json({"ok": True, "duplicate": duplicate, "sha256": sha256}, 202)


async def chat_messages(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    webchat, store = runtime.webchat, runtime.store
    query = request.query
    try:
        key = webchat.key(query.get("user"), query.get("district"))
        after = int(query.get("after", "0") or 0)
        wait = float(query.get("wait", "0") or 0)
    except WebchatInputError as error:
        return _error(str(error))
    except ValueError:
        return _error("Tham số không hợp lệ.")
    if after < 0 or after > 2**53 or not wait >= 0:
        return _error("Tham số không hợp lệ.")
    wait = min(wait, LONG_POLL)
    if after:
        # Asking for what follows `after` confirms the page holds everything up to it.
        await store.outbox_ack(key, after)
    deadline = time.monotonic() + wait
    while True:
        with webchat.listen(key) as listener:
            items = await store.outbox_read(key, after)
            remaining = deadline - time.monotonic()
            if items or remaining <= 0 or webchat.closing:
                break
            await listener.wait(min(remaining, RECHECK))
    messages = [webchat.render(item.seq, decode_outbound(item.payload)) for item in items]
    cursor = items[-1].seq if items else after
    return _json({"messages": messages, "cursor": cursor})


# -- the application -----------------------------------------------------------------------------


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A failure of ours never shows a stack trace, and is always logged."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        if request.path.startswith("/chat/"):
            return _error("Hệ thống đang bận, bạn thử lại sau ít phút nhé.", 503)
        raise


def build_app(runtime: Runtime, *, manage: bool = True) -> web.Application:
    """The application over a runtime. With `manage`, the app starts and stops the runtime."""
    # The ack-time middleware is outermost, so an error page's time counts too.
    app = web.Application(
        middlewares=[runtime.ops.metrics.middleware(), _errors],
        client_max_size=MAX_BYTES + MAX_JSON,
    )
    app[RUNTIME] = runtime
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/media/{name}", media)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", runtime.ops.metrics.handler)  # Prometheus (bots/ops)
    app.router.add_get("/chat/config", chat_config)
    app.router.add_post("/chat/send", chat_send)
    app.router.add_post("/chat/upload", chat_upload)
    app.router.add_get("/chat/messages", chat_messages)
    add_webhook_routes(app, runtime)
    console = console_deps(runtime)
    mount_console(app, console)  # /admin/… (bots/console)
    add_public_routes(app, public_deps(runtime))  # /verify/…, /chung-nhan (bots/verify.py)
    if manage:

        async def lifecycle(app: web.Application) -> AsyncIterator[None]:
            await runtime.start()
            # With no organiser account yet: `admin` with a one-time password `loa serve` prints.
            assert runtime.flows is not None  # loaded by start()
            runtime.first_admin_password = await ensure_first_admin(
                runtime.db, runtime.flows.compiled
            )
            ticker = asyncio.get_running_loop().create_task(_console_ticks(console))
            yield
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await runtime.stop()

        app.cleanup_ctx.append(lifecycle)

    async def wake_long_polls(app: web.Application) -> None:
        runtime.webchat.close()  # before aiohttp waits for in-flight requests to finish

    app.on_shutdown.append(wake_long_polls)
    return app


def console_deps(runtime: Runtime) -> ConsoleDeps:
    """What the organiser console needs from the runtime (functions: it is mounted before the
    runtime starts, and the flows change on reload)."""

    async def ingest(inbound: Inbound) -> bool:
        if runtime.certificates is not None:
            # An approval outside the messaging window: certificate with the registered name.
            inbound = await runtime.certificates.prepare_approval(inbound)
        return await runtime.pipeline.ingest(inbound)

    def tree() -> OrgTree:
        version = runtime.version
        main = runtime.archive.main_file(version) if version else None
        return load_org_tree(main or runtime.settings.config, version)

    def bundle() -> CompiledBundle:
        if runtime.flows is None:
            raise RuntimeError("flows not loaded")
        return runtime.flows.compiled

    settings = runtime.settings
    return ConsoleDeps(
        db=lambda: runtime.db,
        files=lambda: runtime.files,
        flows=bundle,
        tree=tree,
        notify=ingest,
        send=send_through_inbox(ingest, _utcnow),
        secure_cookies=settings.base_url.startswith("https://"),
        handover_timeout=timedelta(seconds=settings.handover_timeout),
        flows_control=runtime.reloader,  # flows pages, upload, reload (bots/reload.py)
    )


def public_deps(runtime: Runtime) -> PublicDeps:
    """What the public certificate pages need from the runtime."""

    async def ingest(inbound: Inbound) -> bool:
        return await runtime.pipeline.ingest(inbound)

    def bundle() -> CompiledBundle:
        if runtime.flows is None:
            raise RuntimeError("flows not loaded")
        return runtime.flows.compiled

    def smtp() -> SmtpSettings | None:
        return runtime.certificates.smtp if runtime.certificates is not None else None

    return PublicDeps(db=lambda: runtime.db, flows=bundle, notify=ingest, smtp=smtp)


async def _console_ticks(console: ConsoleDeps, every: float = CONSOLE_TICK) -> None:
    """The console's periodic work (undelivered decisions, stale hand-overs, housekeeping)."""
    while True:
        await asyncio.sleep(every)
        try:
            await console_tick(console)
        except Exception:  # console_tick logs its own parts; this is a last resort
            log.exception("console tick failed; next one in %.0f s", every)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Any) -> web.Application:
    """An application for `settings` (a `bots.settings.Settings`), started with the server."""
    return build_app(Runtime(settings))


async def serve(
    runtime: Runtime,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully (in-flight requests finish, workers
    drain, stores close). `ready` receives the URL once the socket listens. `reuse_port`: other
    `loa serve` processes of the deployment listen on the same port (bots/supervisor.py)."""
    app = build_app(runtime)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=10)
    await runner.setup()  # starts the runtime (cleanup_ctx)
    # Everything loaded at start-up (flows, SQLAlchemy and aiogram models, compiled machines)
    # lives as long as the process: out of the collector's sight, a full collection no longer
    # walks it, which had paused the loop (and webhook acknowledgements) for a tenth of a second.
    gc.collect()
    gc.freeze()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        bound = port
        for address in runner.addresses:  # the port the system picked when asked for 0
            if isinstance(address, tuple) and len(address) >= 2:
                bound = int(address[1])
                break
        shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for name in ("SIGINT", "SIGTERM"):
            signum = getattr(signal, name, None)
            if signum is not None:
                loop.add_signal_handler(signum, stop.set)
        hangup = getattr(signal, "SIGHUP", None)
        if hangup is not None:  # reload flows.yaml (bots/reload.py); a bad file is refused
            loop.add_signal_handler(hangup, runtime.reloader.reload_soon)
        if ready is not None:
            ready(f"http://{shown}:{bound}/")
        try:
            await stop.wait()
        finally:
            for name in ("SIGINT", "SIGTERM", "SIGHUP"):
                signum = getattr(signal, name, None)
                if signum is not None:
                    loop.remove_signal_handler(signum)
    finally:
        await runner.cleanup()
