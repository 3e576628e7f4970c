"""A bridge for districts that already run a python-telegram-bot (PTB) Application.

    application = ApplicationBuilder().token(TOKEN).build()
    application.add_handler(CommandHandler("gioithieu", gioithieu))   # the district's own
    LoaBridge("tan-phu").install(application)                         # Loa takes the rest
    application.run_polling()

The bridge is a PTB handler (group -1 by default, so it sees updates before the application's
own handlers) and the Loa runtime, started and stopped with the application (`post_init`,
`post_stop`/`post_shutdown`; `async with bridge.running(application)` when the application is
driven by hand). For each update it takes:

    update.to_dict() → adapters.telegram.parse_update (the same parser as the webhook and the
    long poll) → Pipeline.ingest: durable in the inbox, de-duplicated by update_id, *before the
    handler returns* → ApplicationHandlerStop (the application's later groups do not see it)

and Loa's usual worker → engine → outbox → delivery follows, with Loa's Telegram adapter and
rate limits. Delivery goes through the application's own `Bot` (one HTTP client, the same API
server, `base_url` included), never through a second Telegram library.

What Loa does not take reaches the application's handlers untouched: updates that are not
conversation input (group chats, edited messages, my_chat_member, ...), `/commands` listed in
`leave_commands`, updates that one of the application's own CommandHandler, PrefixHandler,
CallbackQueryHandler or ConversationHandler would handle (`leave_own_handlers`), and whatever
the optional PTB filter `only` rejects.

PTB is imported lazily, only here: importing this module does not load it, and nothing else in
Loa imports it (tests/channels/test_ptb_bridge.py checks both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from adapters.telegram import Keyboard, TelegramAdapter, parse_update
from bots.bundles import MEDIA_PREFIX
from bots.channels import ByDistrict, ChannelsConfig, TelegramBot
from bots.runtime import SWEEP_EVERY, Runtime
from bots.settings import Settings, from_env
from flows.vocab import Channel, Inbound, InboundKind

if TYPE_CHECKING:
    from aiohttp.web import AppRunner
    from telegram import Bot, Update
    from telegram.ext import Application, BaseHandler

    from bots.pipeline import Pipeline

log = logging.getLogger("loa.ptb")

# Pauses between attempts when the store refuses an update (Redis restarting, SQLite busy).
# The update exists nowhere else once PTB has fetched it, so the handler waits rather than
# drop it; PTB handles updates one at a time by default, so the application waits too.
INGEST_PAUSES = (0.5, 1.0, 2.0, 5.0, 10.0)

# Bot-API method → PTB Bot method, for what Loa's Telegram adapter sends.
_METHODS = {
    "sendMessage": "send_message",
    "sendPhoto": "send_photo",
    "sendDocument": "send_document",
    "answerCallbackQuery": "answer_callback_query",
}
_UPLOADS = {"sendPhoto": "photo", "sendDocument": "document"}
_TEXT = {"sendMessage", "sendPhoto", "sendDocument"}


class BridgeError(RuntimeError):
    """The bridge cannot run as configured; the message is for the operator (Vietnamese)."""


# ---------------------------------------------------------------------------------------------
# sending through the application's Bot
# ---------------------------------------------------------------------------------------------


def _refusal(code: int, description: str, retry_after: float | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        reply["parameters"] = {"retry_after": retry_after}
    return reply


def _plain(value: Any) -> Any:
    """PTB result objects back into Bot-API JSON (what `adapters.telegram` reads)."""
    to_dict = getattr(value, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


class PtbTransport:
    """`adapters.telegram.Transport` over a PTB `Bot`: `await transport(method, json_body)`
    returns the Bot-API reply as a dict, PTB's exceptions mapped back onto Telegram's error
    codes, so the adapter's one error mapping (`adapters.telegram.error_for`) applies."""

    def __init__(self, bot: Bot, *, local_file: Any = None) -> None:
        self.bot = bot
        self._local_file = local_file  # `/media/<name>` → the file on disk to upload

    def __repr__(self) -> str:  # never show the token
        return "PtbTransport()"

    async def __call__(self, method: str, body: bytes) -> Mapping[str, Any]:
        params = orjson.loads(body)
        return await self.call(method, params if isinstance(params, dict) else {})

    async def call(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        from telegram import error

        name = _METHODS.get(method)
        if name is None:
            return _refusal(400, f"Bad Request: unknown method {method}")
        values = dict(params)
        field = _UPLOADS.get(method)
        if field is not None and self._local_file is not None:
            reference = values.get(field)
            if isinstance(reference, str) and not reference.startswith(("http://", "https://")):
                path = self._local_file(reference)
                if path is not None:
                    values[field] = Path(path)  # PTB uploads a Path as multipart
        if method in _TEXT:
            # Loa's texts are plain: the application's Defaults(parse_mode=...) must not
            # reinterpret "<", "*" or "_" in them.
            values.setdefault("parse_mode", None)
        try:
            result = await getattr(self.bot, name)(**values)
        except error.RetryAfter as refused:
            return _refusal(429, str(refused), _seconds(refused))
        except error.Forbidden as refused:
            return _refusal(403, str(refused))
        except error.InvalidToken as refused:
            return _refusal(401, str(refused))
        except error.EndPointNotFound as refused:
            return _refusal(404, str(refused))
        except error.Conflict as refused:
            return _refusal(409, str(refused))
        except error.BadRequest as refused:  # before NetworkError: PTB derives it from that
            return _refusal(400, str(refused))
        except error.TimedOut:
            # Telegram may have the message: the pipeline retries (at-least-once).
            return _refusal(504, "Telegram không trả lời kịp.")
        except error.NetworkError:  # connection failures and 5xx
            # The HTTP library's text is not repeated: it may quote the URL, which holds the
            # token, and this description is shown to organisers when a reply keeps failing.
            return _refusal(502, "Không kết nối được tới Telegram.")
        except error.TelegramError as refused:
            return _refusal(400, str(refused))
        return {"ok": True, "result": _plain(result)}


def _seconds(refused: Any) -> float:
    with warnings.catch_warnings():  # PTB 22 deprecates the int form of retry_after
        warnings.simplefilter("ignore")
        value = refused.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


# ---------------------------------------------------------------------------------------------
# the runtime's view of the bot
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BridgedTelegram(ChannelsConfig):
    """The runtime's channel configuration in a bridge process: no channel for Loa to run (the
    PTB application owns the bot, so `used` is empty and no poller or webhook starts), only
    the bot token that downloading the pictures people send needs."""

    bridged: tuple[TelegramBot, ...] = ()

    def telegram_token(self, district: str) -> str | None:
        for bot in self.bridged:
            if bot.district == district:
                return bot.token
        return None


def _api_root(bot: Bot, fallback: str) -> str:
    """The Bot API server the application talks to, as Loa's `telegram_api` setting (where
    media downloads go): PTB's `base_url` is `<root>/bot<token>`."""
    suffix = f"/bot{bot.token}"
    base = bot.base_url.rstrip("/")
    if base.endswith(suffix):
        return base[: -len(suffix)]
    log.warning("PTB base_url is not <server>/bot<token>: media downloads use %s", fallback)
    return fallback


def _command(text: str) -> str | None:
    """`/gioithieu@DoanBot args` → `gioithieu`."""
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return None
    return text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower() or None


# ---------------------------------------------------------------------------------------------
# the bridge
# ---------------------------------------------------------------------------------------------


class LoaBridge:
    """Loa's pipeline for one district's Telegram bot, inside a PTB application.

    `settings`: Loa's settings (default: read from the environment, as `loa serve` does; `env`
    replaces the environment for that and for `$VAR` secrets). `keyboard`: "reply" or "inline"
    (as a district's `telegram: {keyboard: ...}` in flows.yaml). `stop`: end PTB's handling of
    an update Loa took (ApplicationHandlerStop), so the application's later groups do not
    answer it as well. `web`: also serve Loa's web application (organiser console, browser
    chat, /healthz, /metrics) at LOA_HOST:LOA_PORT, as `loa serve` does.
    """

    def __init__(
        self,
        district: str,
        *,
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        keyboard: Keyboard = "reply",
        leave_commands: Iterable[str] = (),
        leave_own_handlers: bool = True,
        only: Any = None,
        stop: bool = True,
        web: bool = False,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        if keyboard not in ("reply", "inline"):
            raise ValueError(f"keyboard {keyboard!r}: reply or inline")
        self.district = district
        self.env = env
        self.keyboard: Keyboard = keyboard
        self.leave_commands = frozenset(c.lstrip("/").lower() for c in leave_commands)
        self.leave_own_handlers = leave_own_handlers
        self.only = only  # a PTB filter (telegram.ext.filters): Loa takes only what it accepts
        self.stop_others = stop
        self.web = web
        self.sweep_every = sweep_every
        self.web_url: str | None = None  # once the web application listens
        self._settings = settings
        self._runtime: Runtime | None = None
        self._runner: AppRunner | None = None
        self._application: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._handler: BaseHandler[Any, Any, Any] | None = None
        self._adapter: TelegramAdapter | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- what the application uses -------------------------------------------------------------

    def install(
        self, application: Application[Any, Any, Any, Any, Any, Any], *, group: int = -1
    ) -> BaseHandler[Any, Any, Any]:
        """Add the handler (group -1: before the application's own handlers) and tie Loa's
        runtime to the application's life: it starts in `post_init` (before the first update)
        and stops in `post_stop` (after the last update was handled). Hooks the application
        already has still run: theirs after Loa's start and before Loa's stop."""
        handler = self.handler(application)
        application.add_handler(handler, group)
        their_init = application.post_init
        their_stop = application.post_stop
        their_shutdown = application.post_shutdown

        async def post_init(app: Any) -> None:
            await self.start(app)
            if their_init is not None:
                await their_init(app)

        async def post_stop(app: Any) -> None:
            try:
                if their_stop is not None:
                    await their_stop(app)
            finally:
                await self.stop()

        async def post_shutdown(app: Any) -> None:
            # Also reached when start-up failed and post_stop never ran.
            try:
                if their_shutdown is not None:
                    await their_shutdown(app)
            finally:
                await self.stop()

        application.post_init = post_init
        application.post_stop = post_stop
        application.post_shutdown = post_shutdown
        return handler

    def handler(
        self, application: Application[Any, Any, Any, Any, Any, Any] | None = None
    ) -> BaseHandler[Any, Any, Any]:
        """The PTB handler alone, for an application that places it itself (then start and
        stop the bridge with `running()` or `start()`/`stop()`)."""
        if application is not None:
            self._application = application
        if self._handler is None:
            self._handler = _handler_class()(self)
        return self._handler

    @contextlib.asynccontextmanager
    async def running(
        self, application: Application[Any, Any, Any, Any, Any, Any]
    ) -> AsyncIterator[LoaBridge]:
        """Loa's runtime for as long as the block runs, for an application driven by hand
        (`async with application:` ... `await application.start()` ...); run_polling and
        run_webhook use the hooks `install` sets instead."""
        await self.start(application)
        try:
            yield self
        finally:
            await self.stop()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise BridgeError(
                "Loa chưa khởi động: chạy ứng dụng bằng run_polling()/run_webhook() sau "
                "bridge.install(application), hoặc dùng `async with bridge.running(application)`."
            )
        return self._runtime

    @property
    def pipeline(self) -> Pipeline:
        return self.runtime.pipeline

    @property
    def started(self) -> bool:
        return self._runtime is not None

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Load and check flows.yaml, open the records and the store, recover what a previous
        run left, start the workers and the recovery sweep (and the web application with
        `web`). Raises `bots.runtime.FlowsInvalid` or `BridgeError`, with nothing started."""
        if self._runtime is not None:
            return
        self._application = application
        bot = application.bot
        base = self._settings if self._settings is not None else from_env(self.env)
        settings = replace(base, telegram_api=_api_root(bot, base.telegram_api))
        transport = PtbTransport(bot, local_file=self._local_file)
        adapter = TelegramAdapter(self.district, transport=transport, keyboard=self.keyboard)
        self._adapter = adapter
        runtime = Runtime(
            settings,
            env=self.env,
            # The PTB application receives; Loa sends through it. Loa's own Telegram channels
            # (webhook, long poll) and flows.yaml's other channels are not run in this process.
            adapters={Channel.TELEGRAM: ByDistrict(Channel.TELEGRAM, {self.district: adapter})},
            serve_channels=False,
            recover=True,
            sweep_every=self.sweep_every,
        )
        flows = runtime.load()  # FlowsInvalid: nothing was opened yet
        if self.district not in dict(flows.districts):
            known = ", ".join(slug for slug, _ in flows.districts)
            raise BridgeError(
                f"{settings.config}: không có đơn vị '{self.district}' (các đơn vị: {known})"
            )
        if any(slug == self.district and "telegram" in chans for slug, chans in flows.channels):
            log.warning(
                "flows.yaml declares a telegram channel for %s; this process leaves it to the "
                "PTB application. Do not let `loa serve` receive for the same bot as well.",
                self.district,
            )
        runtime.channel_config = _BridgedTelegram(
            bridged=(TelegramBot(self.district, bot.token, mode="ptb", keyboard=self.keyboard),)
        )
        self._warn_start_command()
        self._runtime = runtime
        try:
            if self.web:
                await self._serve_web(runtime)
            else:
                await runtime.start()
        except BaseException:
            self._runtime = None
            if not self.web:  # the web runner cleans up after itself
                with contextlib.suppress(Exception):
                    await runtime.stop()  # whatever was opened before the failure
            raise
        log.info("Loa takes %s's Telegram updates from the PTB application", self.district)

    async def stop(self) -> None:
        """Stop the workers after what is running finishes (replies left undelivered stay in
        the outbox for the next start), close the store and the records. Idempotent."""
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        tasks = list(self._tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # stops the runtime (build_app's cleanup context)
            self.web_url = None
        else:
            await runtime.stop()

    async def _serve_web(self, runtime: Runtime) -> None:
        from aiohttp import web

        from bots.server import build_app

        runner = web.AppRunner(build_app(runtime), handle_signals=False, access_log=None)
        await runner.setup()  # starts the runtime
        try:
            settings = runtime.settings
            site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=10)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        port = settings.port
        for address in runner.addresses:  # the port the system chose when asked for 0
            if isinstance(address, tuple) and len(address) >= 2:
                port = int(address[1])
                break
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
        self._runner = runner
        self.web_url = f"http://{host}:{port}/"

    def _local_file(self, reference: str) -> Path | None:
        runtime = self._runtime
        if runtime is None or not reference.startswith(MEDIA_PREFIX):
            return None
        return runtime.media_file(reference[len(MEDIA_PREFIX) :])

    def _warn_start_command(self) -> None:
        if "start" in self.leave_commands or "start" in self._own_commands():
            log.warning(
                "/start is left to the PTB application: deep links (t.me/<bot>?start=<ref>) "
                "and first contacts will not reach Loa"
            )

    def _own_commands(self) -> set[str]:
        from telegram.ext import CommandHandler

        found: set[str] = set()
        application = self._application
        if application is not None and self.leave_own_handlers:
            for handlers in application.handlers.values():
                for handler in handlers:
                    if isinstance(handler, CommandHandler):
                        found.update(handler.commands)
        return found

    # -- taking updates ------------------------------------------------------------------------

    def claim(self, update: object) -> tuple[Inbound, ...] | None:
        """What Loa takes from `update` (None: leave it to the application's handlers)."""
        from telegram import Update

        if not isinstance(update, Update):
            return None
        try:
            inbounds = parse_update(update.to_dict(), self.district)
        except Exception:  # parse_update logs malformed updates; to_dict should never fail
            log.exception("ptb: update %s could not be read", update.update_id)
            return None
        if not inbounds or self._left_to_application(update):
            return None
        return tuple(inbounds)

    def _left_to_application(self, update: Update) -> bool:
        if self.only is not None and not self.only.check_update(update):
            return True
        message = update.message
        text = message.text if message is not None else None
        if self.leave_commands and text and _command(text) in self.leave_commands:
            return True
        application = self._application
        if not self.leave_own_handlers or application is None:
            return False
        from telegram.ext import (
            CallbackQueryHandler,
            CommandHandler,
            ConversationHandler,
            PrefixHandler,
        )

        claiming = (CommandHandler, PrefixHandler, CallbackQueryHandler, ConversationHandler)
        for handlers in application.handlers.values():
            for handler in handlers:
                if handler is self._handler or not isinstance(handler, claiming):
                    continue
                check = handler.check_update(update)
                if check is not None and check is not False:
                    return True
        return False

    async def take(self, inbounds: Sequence[Inbound]) -> int:
        """Ingest what `claim` returned: stored durably (de-duplicated by update_id) when this
        returns. Returns how many were new."""
        pipeline = self.runtime.pipeline
        stored = 0
        for inbound in inbounds:
            if await self._ingest(pipeline, inbound):
                stored += 1
                self._after_ingest(inbound)
        return stored

    async def _ingest(self, pipeline: Pipeline, inbound: Inbound) -> bool:
        for pause in (*INGEST_PAUSES, None):
            try:
                return await pipeline.ingest(inbound)
            except Exception as error:
                if pause is None:
                    log.error(
                        "ptb: update %s could not be stored; it is lost: %s",
                        inbound.message_id, error,
                    )
                    raise
                log.warning(
                    "ptb: storing update %s failed (%s); trying again in %.1f s",
                    inbound.message_id, error, pause,
                )
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    def _after_ingest(self, inbound: Inbound) -> None:
        """An inline-button tap is answered once stored, in the background, so the person's
        spinner stops (as bots.channels does for the webhook and the long poll)."""
        if inbound.kind is not InboundKind.CHOICE:
            return
        query = dict(inbound.data).get("callback_query_id")
        if not query:
            return
        task = asyncio.ensure_future(self._answer(query))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, query: str) -> None:
        if self._adapter is None:
            return
        try:
            await self._adapter.answer_callback(query)
        except Exception as error:  # a late answer fails ("query is too old"): harmless
            log.info("ptb: answering a button tap failed: %s", error)


@cache
def _handler_class() -> type[Any]:
    """The PTB handler class, built on first use so that importing this module never imports
    PTB."""
    try:
        from telegram import Update
        from telegram.ext import ApplicationHandlerStop, TypeHandler
    except ImportError:
        raise BridgeError(
            "Chưa cài python-telegram-bot: cài Loa kèm phần mở rộng ptb (uv sync --extra ptb, "
            "hoặc pip install 'loa[ptb]')."
        ) from None

    class LoaHandler(TypeHandler[Update, Any, None]):
        """Takes the updates `LoaBridge.claim` accepts; the rest go on to other handlers."""

        __slots__ = ("bridge",)

        def __init__(self, bridge: LoaBridge) -> None:
            # block=True whatever the application's Defaults say: the update must be in the
            # inbox before PTB moves on, and ApplicationHandlerStop only works when blocking.
            super().__init__(Update, self._callback, block=True)
            self.bridge = bridge

        def check_update(  # type: ignore[override]  # PTB passes any truthy result on
            self, update: object
        ) -> tuple[Inbound, ...] | None:
            return self.bridge.claim(update)

        async def handle_update(
            self, update: Any, application: Any, check_result: Any, context: Any
        ) -> None:
            self.collect_additional_context(context, update, application, check_result)
            await self.bridge.take(check_result)
            if self.bridge.stop_others:
                raise ApplicationHandlerStop

        async def _callback(self, update: Any, context: Any) -> None:
            claimed = self.bridge.claim(update)
            if claimed:
                await self.bridge.take(claimed)

    return LoaHandler


def loa_handler(
    application: Application[Any, Any, Any, Any, Any, Any],
    district: str,
    *,
    group: int = -1,
    **options: Any,
) -> LoaBridge:
    """`LoaBridge(district, **options).install(application, group=group)`; the bridge."""
    bridge = LoaBridge(district, **options)
    bridge.install(application, group=group)
    return bridge


__all__ = ["INGEST_PAUSES", "BridgeError", "LoaBridge", "PtbTransport", "loa_handler"]
