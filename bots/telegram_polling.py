"""Telegram long polling, for a district whose bot says `mode: polling` (no public URL needed).

    offset ← the stored cursor `telegram:<bot id>:offset` (none: whatever Telegram still holds)
    loop:  getUpdates(offset, timeout=25)
           for each update in order: parse → ingest (durable, de-duplicated by update id)
           offset ← last update id + 1, stored; the next getUpdates confirms them to Telegram

Telegram forgets an update only when a later `getUpdates` asks with a higher offset, and the
offset is stored only after its updates are in the inbox: a crash or restart never skips an
update; one it re-reads (stored, but not yet confirmed) is a duplicate the inbox drops. So a
restart neither skips nor reprocesses. With a webhook set Telegram refuses getUpdates (409):
the poller deletes the webhook once at start (the district's configuration asked for polling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from adapters.telegram import parse_update

if TYPE_CHECKING:
    from adapters.telegram import TelegramAdapter
    from bots.channels import Channels, TelegramBot

log = logging.getLogger("loa.telegram")

POLL_TIMEOUT = 25  # seconds Telegram holds a getUpdates open when there is nothing to say
ALLOWED_UPDATES = ("message", "callback_query", "my_chat_member")
PAUSES = (1.0, 2.0, 5.0, 15.0, 30.0)  # after consecutive failures


class TelegramPoller:
    def __init__(
        self,
        bot: TelegramBot,
        adapter: TelegramAdapter,
        transport: Any,
        channels: Channels,
        *,
        clock: Callable[[], datetime],
        timeout: int = POLL_TIMEOUT,
    ) -> None:
        self.bot = bot
        self.adapter = adapter
        self.transport = transport
        self.channels = channels
        self.clock = clock
        self.timeout = timeout
        self.cursor = f"telegram:{bot.bot_id}:offset"
        self.failures = 0

    async def run(self) -> None:
        """Poll until cancelled. Failures are logged and retried with growing pauses."""
        await self._drop_webhook()
        offset = await self._load_offset()
        while True:
            try:
                offset = await self.poll_once(offset)
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except _Refused as refusal:
                await self._pause(refusal.wait, refusal.message)
            except Exception as error:
                await self._pause(None, f"{type(error).__name__}: {error}")

    async def poll_once(self, offset: int | None) -> int | None:
        """One getUpdates and everything it returned ingested; the next offset."""
        params: dict[str, Any] = {"timeout": self.timeout, "allowed_updates": list(ALLOWED_UPDATES)}
        if offset is not None:
            params["offset"] = offset
        reply = await self.transport.call("getUpdates", params)
        if not reply.get("ok"):
            raise _Refused.of(reply)
        updates = reply.get("result") or []
        done = offset
        try:
            for update in updates:
                update_id = update.get("update_id") if isinstance(update, dict) else None
                if not isinstance(update_id, int):
                    continue
                for inbound in parse_update(update, self.bot.district):
                    if await self.channels.ingest(inbound):
                        self.channels.after_ingest(inbound)
                done = update_id + 1
        finally:
            if done is not None and done != offset:
                await self.channels.state.put(self.cursor, str(done), self.clock())
        return done

    async def _load_offset(self) -> int | None:
        while True:
            try:
                stored = await self.channels.state.get(self.cursor)
                return int(stored) if stored else None
            except ValueError:
                return None
            except Exception as error:
                await self._pause(None, f"không đọc được vị trí đã nhận ({error})")

    async def _drop_webhook(self) -> None:
        try:
            reply = await self.transport.call("deleteWebhook", {"drop_pending_updates": False})
            if not reply.get("ok"):
                log.warning(
                    "telegram %s: deleteWebhook refused: %s",
                    self.bot.district, reply.get("description"),
                )
        except Exception as error:
            log.warning("telegram %s: deleteWebhook failed: %s", self.bot.district, error)

    async def _pause(self, wait: float | None, why: str) -> None:
        self.failures += 1
        pause = wait if wait is not None else PAUSES[min(self.failures, len(PAUSES)) - 1]
        log.warning(
            "telegram %s: getUpdates failed (%s); trying again in %.0f s",
            self.bot.district, why, pause,
        )
        await asyncio.sleep(pause)


class _Refused(Exception):
    def __init__(self, message: str, wait: float | None) -> None:
        super().__init__(message)
        self.message = message
        self.wait = wait

    @classmethod
    def of(cls, reply: dict[str, Any]) -> _Refused:
        code = reply.get("error_code")
        description = str(reply.get("description") or "")
        params = reply.get("parameters") or {}
        if code == 429 and params.get("retry_after") is not None:
            return cls(description, float(params["retry_after"]))
        if code in (401, 404):
            return cls(f"mã bot không đúng hoặc bot đã bị xóa ({description})", 60.0)
        if code == 409:
            why = f"đang có webhook hoặc một tiến trình khác cũng nhận tin ({description})"
            return cls(why, 30.0)
        return cls(f"mã {code}: {description}", None)


__all__ = ["ALLOWED_UPDATES", "POLL_TIMEOUT", "TelegramPoller"]
