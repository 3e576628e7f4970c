"""The messaging channels of a deployment, built from each district's `channels:` in flows.yaml.

    config = read_config(flows.channels, settings, os.environ)   # at load: refuses what is wrong
    channels = Channels(config, settings, state=..., media=...)  # at start
    adapters = channels.adapters()                                # Channel → Adapter, for sending
    await channels.start(pipeline)      # Telegram long polls, Zalo token refresh, health checks
    await channels.stop_intake()        # on shutdown: no new inbound
    await channels.close()              # after the last delivery: HTTP sessions, token keeper

What a district may write (secrets always as `$VAR`, read from the environment at start-up and
never logged; `loa check` already refuses a secret written in the file):

    messenger: {page_id: "1029384756", page_token: $TANPHU_PAGE_TOKEN}
    zalo:      {oa_id: "2222222222222222222"}
    zalobot:   {token: $TANPHU_ZALOBOT_TOKEN, secret_token: $TANPHU_ZALOBOT_SECRET}
    telegram:  {token: $TANPHU_TELEGRAM_TOKEN, secret_token: $TANPHU_TELEGRAM_SECRET}
    telegram:  {token: $TANPHU_TELEGRAM_TOKEN, mode: polling}
    webchat:   {}

One Meta app serves every district's Page and one Zalo app every district's OA: their app
credentials are settings (`LOA_MESSENGER_*`, `LOA_ZALO_*`). An adapter module is imported only
when some district uses its channel; aiogram only when some district uses Telegram.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from adapters.base import Adapter, ConfigurationError
from bots.channel_state import ChannelState, UnjudgedEcho
from flows.vocab import Channel, ConversationKey, Inbound, InboundKind, Outbound

if TYPE_CHECKING:
    from adapters.messenger import MessengerAdapter
    from adapters.telegram import TelegramAdapter
    from adapters.zalo import Echo as ZaloEcho
    from adapters.zalo import ZaloAdapter
    from adapters.zalobot import ZaloBotAdapter
    from bots.records.db import Database
    from bots.settings import Settings
    from bots.zalo_tokens import ZaloTokenKeeper

log = logging.getLogger("loa.channels")

KNOWN = ("messenger", "zalo", "zalobot", "telegram", "webchat", "console")
_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # Telegram's rule for secret_token
POLLING, WEBHOOK = "polling", "webhook"

Ingest = Callable[[Inbound], Awaitable[bool]]


class ChannelConfigError(ValueError):
    """The channels cannot be set up as written; `problems` are Vietnamese, one per line, and
    name variables, never their values."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessengerPage:
    district: str
    page_id: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ZaloOa:
    district: str
    oa_id: str


@dataclass(frozen=True, slots=True)
class ZaloBot:
    district: str
    token: str = field(repr=False)
    secret_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TelegramBot:
    district: str
    token: str = field(repr=False)
    secret_token: str | None = field(default=None, repr=False)
    mode: str = WEBHOOK
    keyboard: str = "reply"

    @property
    def bot_id(self) -> str:
        return self.token.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class ChannelsConfig:
    messenger: tuple[MessengerPage, ...] = ()
    zalo: tuple[ZaloOa, ...] = ()
    zalobot: tuple[ZaloBot, ...] = ()
    telegram: tuple[TelegramBot, ...] = ()
    webchat: tuple[str, ...] = ()

    @property
    def used(self) -> frozenset[Channel]:
        used = set()
        for channel, items in (
            (Channel.MESSENGER, self.messenger),
            (Channel.ZALO, self.zalo),
            (Channel.ZALOBOT, self.zalobot),
            (Channel.TELEGRAM, self.telegram),
        ):
            if items:
                used.add(channel)
        return frozenset(used)

    def telegram_token(self, district: str) -> str | None:
        """The district's Telegram bot token (media downloads need it)."""
        for bot in self.telegram:
            if bot.district == district:
                return bot.token
        return None


def read_config(
    districts: Iterable[tuple[str, Mapping[str, Any]]],
    settings: Settings,
    env: Mapping[str, str],
) -> ChannelsConfig:
    """Each district's channels, secrets resolved from `env`. Raises `ChannelConfigError` with
    every problem found (a missing variable, a missing key, two districts on one Page, ...)."""
    problems: list[str] = []
    messenger: list[MessengerPage] = []
    zalo: list[ZaloOa] = []
    zalobot: list[ZaloBot] = []
    telegram: list[TelegramBot] = []
    webchat: list[str] = []

    for district, channels in districts:
        for name, raw in channels.items():
            where = f"đơn vị {district}, kênh {name}"
            options = dict(raw or {})

            value = _Reader(where, options, env, problems)

            if name == "messenger":
                page_id, token = value("page_id"), value("page_token", secret=True)
                if page_id and token:
                    messenger.append(MessengerPage(district, page_id, token))
            elif name == "zalo":
                oa_id = value("oa_id")
                if oa_id:
                    zalo.append(ZaloOa(district, oa_id))
            elif name == "zalobot":
                token, secret = value("token", secret=True), value("secret_token", secret=True)
                if token and secret:
                    zalobot.append(ZaloBot(district, token, secret))
            elif name == "telegram":
                mode = (value("mode", required=False) or WEBHOOK).lower()
                if mode not in (POLLING, WEBHOOK):
                    problems.append(f"{where}: mode '{mode}' không hợp lệ (polling hoặc webhook)")
                    continue
                token = value("token", secret=True)
                secret = value("secret_token", secret=True, required=mode == WEBHOOK)
                keyboard = (value("keyboard", required=False) or "reply").lower()
                if keyboard not in ("reply", "inline"):
                    problems.append(f"{where}: keyboard '{keyboard}' không hợp lệ (reply, inline)")
                    continue
                if token and ":" not in token:
                    problems.append(f"{where}: mã bot không đúng dạng <số>:<chuỗi>")
                    continue
                if secret and not _SECRET_TOKEN.match(secret):
                    problems.append(
                        f"{where}: secret_token chỉ gồm A-Z, a-z, 0-9, _ và -, tối đa 256 ký tự"
                    )
                    continue
                if token and (secret or mode == POLLING):
                    telegram.append(TelegramBot(district, token, secret, mode, keyboard))
            elif name == "webchat":
                webchat.append(district)
            elif name == "console":
                pass
            else:
                problems.append(f"{where}: kênh không được hỗ trợ (các kênh: {', '.join(KNOWN)})")

    _unique(problems, "Trang Messenger", [(p.page_id, p.district) for p in messenger])
    _unique(problems, "Zalo OA", [(o.oa_id, o.district) for o in zalo])
    _unique(problems, "bot Zalo", [(b.token.split(":")[0], b.district) for b in zalobot])
    _unique(problems, "bot Telegram", [(b.bot_id, b.district) for b in telegram])
    if messenger:
        if not settings.messenger_app_secret:
            problems.append(
                "Messenger: chưa đặt LOA_MESSENGER_APP_SECRET (App Secret của ứng dụng Meta)"
            )
        if not settings.messenger_verify_token:
            problems.append("Messenger: chưa đặt LOA_MESSENGER_VERIFY_TOKEN (mã xác minh webhook)")
    if zalo:
        for name, given in (
            ("LOA_ZALO_APP_ID", settings.zalo_app_id),
            ("LOA_ZALO_APP_SECRET", settings.zalo_app_secret),
            ("LOA_ZALO_OA_SECRET_KEY", settings.zalo_oa_secret_key),
        ):
            if not given:
                problems.append(f"Zalo OA: chưa đặt {name}")
    if problems:
        raise ChannelConfigError(problems)
    return ChannelsConfig(
        tuple(messenger), tuple(zalo), tuple(zalobot), tuple(telegram), tuple(webchat)
    )


class _Reader:
    """Reads one channel's options: `$VAR` values from the environment, problems collected."""

    def __init__(
        self, where: str, options: Mapping[str, Any], env: Mapping[str, str], problems: list[str]
    ) -> None:
        self.where, self.options, self.env, self.problems = where, options, env, problems

    def __call__(self, key: str, *, secret: bool = False, required: bool = True) -> str | None:
        given = self.options.get(key)
        if given is None or given == "":
            if required:
                self.problems.append(f"{self.where}: thiếu '{key}'")
            return None
        text = str(given).strip()
        match = _VAR.match(text)
        if match is None:
            if secret:  # loa check refuses this too; never repeat the value
                self.problems.append(
                    f"{self.where}: '{key}' phải là tên biến môi trường ($TEN_BIEN), "
                    "không ghi thẳng bí mật vào tệp kịch bản"
                )
                return None
            return text
        variable = match.group(1)
        resolved = self.env.get(variable, "").strip()
        if not resolved:
            self.problems.append(
                f"{self.where}: biến môi trường {variable} ('{key}') chưa được đặt"
            )
            return None
        return resolved


def _unique(problems: list[str], what: str, pairs: list[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for ident, district in pairs:
        if ident in seen and seen[ident] != district:
            problems.append(
                f"{what} {ident} được khai báo cho hai đơn vị ({seen[ident]}, {district}); "
                "mỗi kênh chỉ thuộc một đơn vị"
            )
        seen.setdefault(ident, district)


# ---------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------


class ByDistrict(Adapter):
    """One channel whose adapters are per district (Zalo Bot, Telegram): sends are routed by
    the conversation's district. Webhooks reach the district's adapter directly."""

    def __init__(self, channel: Channel, adapters: Mapping[str, Adapter]) -> None:
        self.channel = channel
        self.by_district = dict(adapters)
        self.capabilities = next(iter(self.by_district.values())).capabilities

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return False  # never the entry point of a webhook

    def parse(self, body: bytes) -> list[Inbound]:
        return []

    def handles(self, key: ConversationKey) -> bool:
        """Whether this process has the district's credentials for the channel (the pipeline
        leaves other districts' replies to the process that has them, on a shared store)."""
        return key.district in self.by_district

    async def send(self, key: ConversationKey, message: Outbound, *, start: int = 0) -> None:
        adapter = self.by_district.get(key.district)
        if adapter is None:
            raise ConfigurationError(
                f"Đơn vị '{key.district}' không có kênh {self.channel.value} nào được cấu hình."
            )
        if start:
            await adapter.send(key, message, start=start)  # type: ignore[call-arg]
        else:
            await adapter.send(key, message)


def media_resolver(base_url: str) -> Callable[[str], str]:
    """Outbound media references (`/media/<name>` from the flows' media library) as URLs the
    platforms fetch (LOA_PUBLIC_URL); absolute URLs pass through."""
    base = base_url.rstrip("/")

    def resolve(reference: str) -> str:
        if reference.startswith(("https://", "http://")):
            return reference
        if reference.startswith("/"):
            return base + reference
        return f"{base}/media/{reference}"

    return resolve


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Channels:
    """Every configured channel of the deployment, ready to receive and send."""

    def __init__(
        self,
        config: ChannelsConfig,
        settings: Settings,
        *,
        database: Database,
        local_file: Callable[[str], Path | None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        zalo_grace: float | None = None,
        zalo_sweep_every: float | None = None,
    ) -> None:
        from bots.takeover import ZALO_GRACE, ZALO_SWEEP_EVERY

        self.config = config
        self.settings = settings
        self.state = ChannelState(database)
        self.clock = clock
        self.zalo_grace = ZALO_GRACE if zalo_grace is None else zalo_grace
        self.zalo_sweep_every = ZALO_SWEEP_EVERY if zalo_sweep_every is None else zalo_sweep_every
        self._db = database
        self._local_file = local_file
        self._http: aiohttp.ClientSession | None = None
        self.messenger: MessengerAdapter | None = None
        self.zalo: ZaloAdapter | None = None
        self.zalo_keeper: ZaloTokenKeeper | None = None
        self.zalobot: dict[str, ZaloBotAdapter] = {}
        self.telegram: dict[str, TelegramAdapter] = {}
        self.telegram_transports: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # pollers, refresher, health, echo checks
        self._intake: set[asyncio.Task[Any]] = set()  # what brings inbound in (stopped first)
        self._ingest: Ingest | None = None
        self._build()

    # -- building -----------------------------------------------------------------------------

    def http_session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30), raise_for_status=False
            )
        return self._http

    def _build(self) -> None:
        config, settings = self.config, self.settings
        media_url = media_resolver(settings.base_url)
        if (config.messenger or config.zalo or config.zalobot) and not settings.public_url:
            log.warning(
                "LOA_PUBLIC_URL chưa được đặt: Messenger và Zalo không tải được ảnh Loa gửi"
            )
        if config.messenger:
            messenger = importlib.import_module("adapters.messenger")
            self.messenger = messenger.MessengerAdapter(
                app_secret=settings.messenger_app_secret,
                verify_token=settings.messenger_verify_token,
                app_id=settings.messenger_app_id or None,
                pages={p.page_id: (p.district, p.token) for p in config.messenger},
                session=self.http_session(),
                graph_api=settings.graph_api,
                media_url=media_url,
            )
        if config.zalo:
            zalo = importlib.import_module("adapters.zalo")
            tokens = importlib.import_module("bots.zalo_tokens")
            oas = {o.oa_id: o.district for o in config.zalo}
            self.zalo_keeper = tokens.ZaloTokenKeeper(
                self._db,
                self.http_session(),
                settings.zalo_oauth,
                settings.zalo_app_id,
                settings.zalo_app_secret,
                districts=oas,
                start_url=f"{settings.base_url}{tokens.START_PATH}",
            )
            self.zalo = zalo.ZaloAdapter(
                app_id=settings.zalo_app_id,
                oa_secret_key=settings.zalo_oa_secret_key,
                accounts={oa_id: (district, self.zalo_keeper) for oa_id, district in oas.items()},
                session=self.http_session(),
                api_base=settings.zalo_api,
                media_url=media_url,
                on_sent=self._zalo_sent,
            )
        if config.zalobot:
            zalobot = importlib.import_module("adapters.zalobot")
            for zbot in config.zalobot:
                self.zalobot[zbot.district] = zalobot.ZaloBotAdapter(
                    zbot.district,
                    token=zbot.token,
                    secret_token=zbot.secret_token,
                    session=self.http_session(),
                    api_base=settings.zalobot_api,
                    media_url=media_url,
                )
        if config.telegram:
            telegram = importlib.import_module("adapters.telegram")
            transport = importlib.import_module("adapters.telegram_transport")
            for bot in config.telegram:
                self.telegram_transports[bot.district] = transport.make_transport(
                    bot.token, api_base=settings.telegram_api, local_file=self._local_file
                )
                self.telegram[bot.district] = telegram.TelegramAdapter(
                    bot.district,
                    secret_token=bot.secret_token,
                    transport=self.telegram_transports[bot.district],
                    keyboard=bot.keyboard,
                )

    def adapters(self) -> dict[Channel, Adapter]:
        """The adapter the outbox sender uses for each configured channel."""
        found: dict[Channel, Adapter] = {}
        if self.messenger is not None:
            found[Channel.MESSENGER] = self.messenger
        if self.zalo is not None:
            found[Channel.ZALO] = self.zalo
        if self.zalobot:
            found[Channel.ZALOBOT] = ByDistrict(Channel.ZALOBOT, self.zalobot)
        if self.telegram:
            found[Channel.TELEGRAM] = ByDistrict(Channel.TELEGRAM, self.telegram)
        return found

    def telegram_bot(self, district: str) -> TelegramBot | None:
        for bot in self.config.telegram:
            if bot.district == district:
                return bot
        return None

    # -- running ------------------------------------------------------------------------------

    async def start(self, ingest: Ingest) -> None:
        """Start what runs in the background: Telegram long polls, the Zalo token refresher, the
        sweep of Zalo echoes left unjudged, the health checks. `ingest` is the pipeline's
        (durable, de-duplicated)."""
        self._ingest = ingest
        if not getattr(self.settings, "runs_singletons", True):
            # Another process of this deployment (process 0) polls, refreshes and checks; this
            # one only serves webhooks and sends (bots/supervisor.py).
            return
        if self.zalo_keeper is not None:
            oa_ids = [o.oa_id for o in self.config.zalo]
            self._spawn(self.zalo_keeper.refresh_forever(oa_ids), "zalo-tokens")
        if self.zalo is not None and self.zalo_sweep_every > 0:
            # At once (echoes a dead or stopped process left), then now and then.
            self._spawn(self._sweep_zalo_echoes_forever(self.zalo_sweep_every), "zalo-pending")
        if any(bot.mode == POLLING for bot in self.config.telegram):
            from bots.telegram_polling import TelegramPoller

            for bot in self.config.telegram:
                if bot.mode == POLLING:
                    poller = TelegramPoller(
                        bot, self.telegram[bot.district], self.telegram_transports[bot.district],
                        self, clock=self.clock,
                    )
                    self._spawn(poller.run(), f"telegram-poll-{bot.district}", intake=True)
        every = self.settings.channel_health_every
        config = self.config
        if every > 0 and (config.messenger or config.telegram or config.zalobot or config.zalo):
            from bots.channel_health import ChannelHealth

            self._spawn(ChannelHealth(self).run_forever(every), "channel-health")

    def _spawn(
        self, work: Awaitable[Any], name: str, *, intake: bool = False
    ) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        task.set_name(f"loa-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if intake:
            self._intake.add(task)
            task.add_done_callback(self._intake.discard)
        return task

    async def stop_intake(self) -> None:
        """No more inbound from long polls (shutdown, before the pipeline drains)."""
        for task in list(self._intake):
            task.cancel()
        await asyncio.gather(*self._intake, return_exceptions=True)

    async def close(self) -> None:
        """Stop every background task, let the token keeper save what it holds, close HTTP."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.zalo_keeper is not None:
            await self.zalo_keeper.close()
        for transport in self.telegram_transports.values():
            try:
                await transport.close()
            except Exception:
                log.exception("telegram: closing a transport failed")
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- what the webhooks and pollers share --------------------------------------------------

    async def ingest(self, inbound: Inbound) -> bool:
        if self._ingest is None:
            raise RuntimeError("channels not started")
        return await self._ingest(inbound)

    def after_ingest(self, inbound: Inbound) -> None:
        """Platform calls an inbound asks for once it is stored, off the acknowledgement path:
        a Telegram inline-button tap is answered so the person's spinner stops."""
        if inbound.channel is Channel.TELEGRAM and inbound.kind is InboundKind.CHOICE:
            query = dict(inbound.data).get("callback_query_id")
            adapter = self.telegram.get(inbound.district)
            if query and adapter is not None:
                self._spawn(self._answer(adapter, query), "telegram-answer")

    @staticmethod
    async def _answer(adapter: TelegramAdapter, query: str) -> None:
        try:
            await adapter.answer_callback(query)
        except Exception as error:  # a late answer fails ("query is too old"): harmless
            log.info("telegram: answering a button tap failed: %s", error)

    async def _zalo_sent(self, key: ConversationKey, message_id: str) -> None:
        try:
            await self.state.record_sent(Channel.ZALO, message_id, key, self.clock())
        except Exception:
            # The message went out; failing the delivery would send it twice. Its echo may then
            # pause the bot by mistake, which an organiser undoes with one click.
            log.exception("zalo: could not record sent message %s", message_id)

    async def zalo_echo(self, echo: ZaloEcho) -> None:
        """An `oa_send_*` echo: pause the bot for that person unless the bot sent it.

        One whose id is not recorded as sent may be of a send still in flight: it is kept in
        the records before the webhook is acknowledged, judged here after `zalo_grace`, and
        judged by any process's sweep if this one dies first."""
        from bots.takeover import pause_inbound

        if echo.admin_id is None:
            if await self._zalo_ours(echo.message_id):
                return
            held = UnjudgedEcho(
                channel=Channel.ZALO,
                message_id=echo.message_id,
                key=ConversationKey(echo.district, Channel.ZALO, echo.user_id),
                timestamp=echo.timestamp,
                seen_at=self.clock(),
            )
            await self.state.hold_echo(held)  # raises: the webhook fails, Zalo may retry
            self._spawn(self._judge_zalo_echo_later(held), "zalo-echo")
            return
        await self.ingest(
            pause_inbound(
                echo.district, Channel.ZALO, echo.user_id, echo.message_id, echo.timestamp
            )
        )

    async def _zalo_ours(self, message_id: str) -> bool:
        zalo = self.zalo
        if zalo is not None and zalo.sent_recently(message_id):
            return True  # this process sent it (no database read needed)
        return await self.state.was_sent(Channel.ZALO, message_id)

    async def _judge_zalo_echo_later(self, echo: UnjudgedEcho) -> None:
        await asyncio.sleep(self.zalo_grace)
        try:
            await self._judge_zalo_echo(echo)
        except Exception:
            log.exception("zalo: could not judge the echo %s; the sweep will", echo.message_id)

    async def _judge_zalo_echo(self, echo: UnjudgedEcho) -> bool:
        """Pause the bot for the person if the echo is still not the bot's own, then forget the
        echo. Safe in two processes at once: the pause is de-duplicated by the echo's id, and
        the row goes only after the pause is stored. True if this call stored the pause."""
        from bots.takeover import pause_inbound

        paused = False
        if not await self._zalo_ours(echo.message_id):
            key = echo.key
            paused = await self.ingest(
                pause_inbound(
                    key.district, key.channel, key.user_id, echo.message_id, echo.timestamp
                )
            )
            if paused:
                log.info(
                    "zalo: the OA wrote to %s in %s by hand; the bot is paused for them",
                    key.user_id, key.district,
                )
        await self.state.drop_echo(echo.channel, echo.message_id)
        return paused

    async def sweep_zalo_echoes(self) -> int:
        """Judge every kept echo older than the grace period: those whose process died, stopped
        or failed before judging them. The number of pauses this call stored."""
        now = self.clock()
        expired = await self.state.prune_echoes(now)
        if expired:
            log.warning("zalo: %d echoes were left unjudged for too long; dropped", expired)
        held = await self.state.held_echoes(Channel.ZALO, now - timedelta(seconds=self.zalo_grace))
        paused = 0
        for echo in held:
            try:
                paused += await self._judge_zalo_echo(echo)
            except Exception:
                log.exception("zalo: could not judge the echo %s; trying later", echo.message_id)
        return paused

    async def _sweep_zalo_echoes_forever(self, every: float) -> None:
        while True:
            try:
                await self.sweep_zalo_echoes()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("zalo: sweeping echoes failed; trying again in %.0f s", every)
            await asyncio.sleep(every)

__all__ = [
    "KNOWN",
    "POLLING",
    "WEBHOOK",
    "ByDistrict",
    "ChannelConfigError",
    "Channels",
    "ChannelsConfig",
    "MessengerPage",
    "TelegramBot",
    "ZaloBot",
    "ZaloOa",
    "media_resolver",
    "read_config",
]
