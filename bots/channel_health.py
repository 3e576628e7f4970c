"""Periodic channel health checks: problems a platform does not announce, shown to organisers.

- **Messenger**: Meta unsubscribes the app from a Page after about an hour of failed webhook
  deliveries, silently. Each Page's `subscribed_apps` must still list the fields Loa needs.
  A token Meta refuses is reported too.
- **Telegram** (webhook mode): `getWebhookInfo` shows whether the webhook is set and the last
  delivery error (`last_error_date`, `last_error_message`).
- **Zalo Bot**: its `getWebhookInfo` the same way, plus whether the webhook still points at this
  district's Loa route (a bot token shared with another tool loses its webhook silently). The
  research documents no result shape: Telegram's is assumed (docs/kenh-zalo.md), with dates in
  seconds or milliseconds.
- **Zalo OA**: an OA configured but never authorised (nothing else says so). A refused refresh
  token is announced by the token keeper's own re-authorisation notice (bots/zalo_tokens.py);
  only when that notice has been marked handled while the OA still needs a human does the
  check open one again.

Each problem opens one `OrganiserNotification` (kind `channel`) for the district and logs an
ERROR line; while it lasts no second notice is opened; when a later check finds it fixed the
notice is marked handled and an INFO line says so. Several processes may check at once: the
notice's cursor row makes them agree on one notice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from adapters.base import AdapterError, ConfigurationError
from bots.records.models import NotificationKind, OrganiserNotification

if TYPE_CHECKING:
    from bots.channels import Channels

log = logging.getLogger("loa.channels.health")

REQUIRED_FIELDS = ("messages", "messaging_postbacks", "messaging_referrals", "message_echoes")
RECENT_ERROR = timedelta(minutes=30)  # a webhook delivery error newer than this is a problem
_MS_DATES = 10**11  # a Unix date above this is in milliseconds (10**11 s is in the year 5138)
_VN = timezone(timedelta(hours=7))


@dataclass(frozen=True, slots=True)
class Finding:
    problem: str  # stable key: one open notice per key
    district: str
    text: str | None  # None: checked and fine (closes an open notice)


class ChannelHealth:
    def __init__(self, channels: Channels) -> None:
        self.channels = channels

    async def run_forever(self, every: float) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("channel health check failed; trying again in %.0f s", every)
            await asyncio.sleep(every)

    async def check_once(self) -> list[Finding]:
        """Check every channel once; open or close notices; the findings (problems and fixes)."""
        findings = [
            *await self._messenger(),
            *await self._telegram(),
            *await self._zalobot(),
            *await self._zalo_oa(),
        ]
        state, now = self.channels.state, self.channels.clock()
        for finding in findings:
            if finding.text is None:
                if await state.close_notice(finding.problem, now):
                    log.info(
                        "kênh đã hoạt động lại: %s (đơn vị %s)", finding.problem, finding.district
                    )
            elif await state.open_notice(finding.problem, finding.district, finding.text, now):
                log.error("%s (đơn vị %s)", finding.text, finding.district)
        await state.prune_sent(now)
        return findings

    async def _messenger(self) -> list[Finding]:
        adapter = self.channels.messenger
        if adapter is None:
            return []
        findings: list[Finding] = []
        for page in adapter.pages:
            key = f"messenger:{page.page_id}"
            try:
                fields = set(await adapter.subscribed_fields(page.page_id))
            except ConfigurationError as error:
                findings.append(
                    Finding(
                        f"{key}:token",
                        page.district,
                        f"Messenger: Meta từ chối mã truy cập của Trang {page.page_id} ({error}). "
                        "Cần tạo mã truy cập Trang mới và khởi động lại Loa.",
                    )
                )
                continue
            except AdapterError as error:  # Graph busy or unreachable: try next time
                log.warning("messenger: health check of Page %s failed: %s", page.page_id, error)
                continue
            findings.append(Finding(f"{key}:token", page.district, None))
            missing = [name for name in REQUIRED_FIELDS if name not in fields]
            if not fields:
                text = (
                    f"Messenger: Trang {page.page_id} không còn gửi tin nhắn đến Loa (Meta đã hủy "
                    "đăng ký webhook, thường sau nhiều giờ Loa không nhận được tin). Chạy lại "
                    "`loa webhook set` để đăng ký lại."
                )
            elif missing:
                text = (
                    f"Messenger: Trang {page.page_id} chưa đăng ký các loại sự kiện "
                    f"{', '.join(missing)}. Chạy lại `loa webhook set`."
                )
            else:
                text = None
            findings.append(Finding(f"{key}:subscription", page.district, text))
        return findings

    async def _telegram(self) -> list[Finding]:
        findings: list[Finding] = []
        now = self.channels.clock()
        for bot in self.channels.config.telegram:
            if bot.mode != "webhook":
                continue
            transport = self.channels.telegram_transports.get(bot.district)
            if transport is None:
                continue
            key = f"telegram:{bot.bot_id}:webhook"
            try:
                reply = await transport.call("getWebhookInfo", {})
            except Exception as error:
                log.warning("telegram %s: getWebhookInfo failed: %s", bot.district, error)
                continue
            if not reply.get("ok"):
                if reply.get("error_code") in (401, 404):
                    findings.append(
                        Finding(
                            key,
                            bot.district,
                            "Telegram: mã bot không còn hiệu lực (bot bị xóa hoặc mã đã đổi ở "
                            "@BotFather). Cập nhật biến môi trường và khởi động lại Loa.",
                        )
                    )
                continue
            info = reply.get("result") or {}
            findings.append(Finding(key, bot.district, _webhook_problem(info, now)))
        return findings


    async def _zalobot(self) -> list[Finding]:
        findings: list[Finding] = []
        now = self.channels.clock()
        for bot in self.channels.config.zalobot:
            adapter = self.channels.zalobot.get(bot.district)
            if adapter is None:
                continue
            key = f"zalobot:{bot.token.split(':', 1)[0]}:webhook"
            try:
                info = await adapter.call("getWebhookInfo", {})
            except ConfigurationError:
                findings.append(
                    Finding(
                        key,
                        bot.district,
                        "Zalo Bot: mã bot không còn hiệu lực (bot bị xóa hoặc mã đã được cấp "
                        "lại trong Zalo Bot Creator). Cập nhật biến môi trường và khởi động lại "
                        "Loa.",
                    )
                )
                continue
            except AdapterError as error:  # Zalo busy or unreachable: try next time
                log.warning("zalobot %s: getWebhookInfo failed: %s", bot.district, error)
                continue
            problem = _zalobot_problem(info if isinstance(info, dict) else {}, bot.district, now)
            findings.append(Finding(key, bot.district, problem))
        return findings

    async def _zalo_oa(self) -> list[Finding]:
        keeper = self.channels.zalo_keeper
        if keeper is None:
            return []
        findings: list[Finding] = []
        for oa in self.channels.config.zalo:
            key = f"zalo:{oa.oa_id}:token"
            try:
                status = await keeper.status(oa.oa_id)
                if status is None:
                    text: str | None = (
                        f"Zalo OA {oa.oa_id} chưa cấp quyền cho Loa nên Loa chưa gửi được tin "
                        f"nhắn Zalo (tin chưa gửi được giữ lại). Quản trị viên OA hãy mở "
                        f"{keeper.start_url} và bấm «Cho phép»."
                    )
                elif status.needs_reauthorisation:
                    if await self._reauthorise_notice_open(oa.district):
                        continue  # the keeper's own notice already tells the organisers
                    detail = f" Chi tiết: {status.problem}" if status.problem else ""
                    text = (
                        f"Zalo OA {oa.oa_id} vẫn cần cấp quyền lại: Zalo không gia hạn được "
                        f"token nên Loa chưa gửi được tin nhắn Zalo (tin chưa gửi được giữ lại). "
                        f"Quản trị viên OA hãy mở {keeper.start_url} và bấm «Cho phép».{detail}"
                    )
                else:
                    text = None
            except SQLAlchemyError as error:
                log.warning("zalo: token status of OA %s unreadable: %s", oa.oa_id, error)
                continue
            findings.append(Finding(key, oa.district, text))
        return findings

    async def _reauthorise_notice_open(self, district: str) -> bool:
        query = (
            select(OrganiserNotification.id)
            .where(
                OrganiserNotification.district == district,
                OrganiserNotification.kind == NotificationKind.REAUTHORISE,
                OrganiserNotification.handled_at.is_(None),
            )
            .limit(1)
        )
        async with self.channels.state.db.reads() as session:
            return (await session.scalar(query)) is not None


def _recent_error(info: dict[str, Any], now: datetime) -> tuple[datetime, str] | None:
    """When and why the platform last failed to deliver to the webhook, if that was recent."""
    last = info.get("last_error_date")
    if not isinstance(last, int | float) or isinstance(last, bool) or last <= 0:
        return None
    when = datetime.fromtimestamp(last / 1000 if last > _MS_DATES else last, _VN)
    if now - when > RECENT_ERROR:
        return None
    return when, str(info.get("last_error_message") or "không rõ")


def _zalobot_problem(info: dict[str, Any], district: str, now: datetime) -> str | None:
    url, route = str(info.get("url") or ""), f"/webhooks/zalobot/{district}"
    command = f"`loa webhook set --district {district} --channel zalobot`"
    if not url:
        return f"Zalo Bot: bot chưa đặt webhook nên không nhận được tin nhắn. Chạy {command}."
    if not urlsplit(url).path.rstrip("/").endswith(route):
        # another tool given the same token (a test script, a polling SDK) took the webhook
        return (
            f"Zalo Bot: webhook của bot đang trỏ đến {url}, không phải địa chỉ của Loa "
            f"(…{route}), nên tin nhắn không đến Loa. Có thể một công cụ khác đã dùng mã bot "
            f"này để đặt webhook. Chạy lại {command}."
        )
    recent = _recent_error(info, now)
    if recent is not None:
        when, message = recent
        pending = info.get("pending_update_count")
        waiting = f" Còn {pending} tin đang chờ." if isinstance(pending, int) else ""
        return (
            f"Zalo Bot không gửi được tin đến Loa lúc {when:%H:%M %d/%m}: {message}.{waiting} "
            "Kiểm tra địa chỉ công khai (LOA_PUBLIC_URL) và chứng chỉ HTTPS."
        )
    return None


def _webhook_problem(info: dict[str, object], now: datetime) -> str | None:
    url = str(info.get("url") or "")
    if not url:
        return (
            "Telegram: bot chưa đặt webhook nên không nhận được tin nhắn. Chạy `loa webhook set` "
            "(hoặc ghi mode: polling cho kênh telegram của đơn vị)."
        )
    recent = _recent_error(dict(info), now)
    if recent is not None:
        when, message = recent
        pending = info.get("pending_update_count")
        return (
            f"Telegram không gửi được tin đến Loa lúc {when:%H:%M %d/%m}: {message}. "
            f"Còn {pending} tin đang chờ. Kiểm tra địa chỉ công khai (LOA_PUBLIC_URL) và "
            "chứng chỉ HTTPS."
        )
    return None


__all__ = ["REQUIRED_FIELDS", "ChannelHealth", "Finding"]
