"""`loa webhook set|info|delete --district D --channel C`: register Loa with a platform.

- **telegram**: `setWebhook` to `<LOA_PUBLIC_URL>/webhooks/telegram/<district>` with the
  district's `secret_token` and the updates Loa reads (`allowed_updates`); `getWebhookInfo`
  (pending updates, last error); `deleteWebhook`. A district in `mode: polling` is refused a
  webhook: the two exclude each other on Telegram's side.
- **messenger**: subscribe the Meta app to the Page's webhook fields and set the Page's Get
  Started button, greeting and persistent menu. Without Get Started, a first-time user opening
  `m.me/<page>?ref=...` arrives without the ref. The app's Callback URL itself is set once per
  app in Meta's dashboard (`<LOA_PUBLIC_URL>/webhooks/messenger`): printed as a reminder.
  `delete` unsubscribes the app from the Page.
- **zalobot**: the Zalo Bot API's `setWebhook` (with the secret token), `getWebhookInfo`,
  `deleteWebhook` (channels.md §3.1).
- **zalo** (OA): no API registers a webhook; the command prints what to enter in Zalo's
  developer console.

Output is Vietnamese; secrets are never printed. Exit code 0 done, 1 failed, 2 not applicable.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import sys
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from adapters.base import AdapterError
from flows.vocab import Choice

CHANNELS = ("telegram", "messenger", "zalobot", "zalo")
TELEGRAM_UPDATES = ("message", "callback_query", "my_chat_member")  # what Loa parses
DEFAULT_MENU = (
    Choice("Menu", "cmd:menu"),
    Choice("Kết quả của tôi", "cmd:status"),
    Choice("Trợ giúp", "cmd:help"),
)
_VN = timezone(timedelta(hours=7))


class WebhookError(Exception):
    """The command cannot do what was asked (Vietnamese, for the operator)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("set", "info", "delete"), help="đặt, xem hoặc gỡ")
    parser.add_argument("--district", required=True, help="mã đơn vị có kênh (trong flows.yaml)")
    parser.add_argument("--channel", required=True, choices=CHANNELS, help="kênh")
    parser.add_argument(
        "--drop-pending", action="store_true",
        help="Telegram: bỏ các cập nhật đang chờ khi đặt hoặc gỡ webhook",
    )
    parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")


def _when(epoch: Any) -> str:
    try:
        moment = datetime.fromtimestamp(float(epoch), UTC).astimezone(_VN)
    except (TypeError, ValueError, OverflowError, OSError):
        return str(epoch)
    return moment.strftime("%H:%M %d/%m/%Y")


def public_base(settings: Any, *, https: bool) -> str:
    base = str(settings.public_url or "").rstrip("/")
    if not base:
        raise WebhookError(
            "Chưa đặt LOA_PUBLIC_URL: nền tảng cần địa chỉ công khai (https://...) để gọi Loa."
        )
    if https and urlsplit(base).scheme != "https":
        raise WebhookError(f"LOA_PUBLIC_URL={base} phải bắt đầu bằng https:// (nền tảng yêu cầu).")
    return base


class Command:
    def __init__(self, args: argparse.Namespace, env: Mapping[str, str]) -> None:
        from bots.runtime import load_flows
        from bots.settings import load

        self.args, self.env = args, env
        self.settings = load(args, env)
        self.flows = load_flows(self.settings.config)
        district = self.flows.compiled.districts.get(args.district)
        if district is None:
            known = ", ".join(self.flows.compiled.districts) or "(chưa có)"
            raise WebhookError(f"Không có đơn vị '{args.district}'. Các đơn vị: {known}.")
        self.district = district
        self.options = dict(self.flows.channels).get(district.slug, {}).get(args.channel)
        if self.options is None:
            raise WebhookError(
                f"Đơn vị '{district.slug}' chưa khai báo kênh {args.channel} trong flows.yaml."
            )

    def config(self) -> Any:
        """This district's channel, secrets read from the environment (bots.channels)."""
        from bots.channels import ChannelConfigError, read_config

        try:
            return read_config(
                [(self.district.slug, {self.args.channel: self.options})], self.settings, self.env
            )
        except ChannelConfigError as error:
            raise WebhookError("\n".join(error.problems)) from None

    async def run(self) -> int:
        action: str = self.args.action
        channel: str = self.args.channel
        if channel == "zalo":
            return self.zalo_oa()
        import aiohttp

        async with aiohttp.ClientSession() as http:
            self.http = http
            handler = getattr(self, f"{channel}_{action}")
            result: int = await handler()
            return result

    # -- telegram -------------------------------------------------------------------------------

    async def _telegram(self, method: str, params: Mapping[str, Any]) -> Any:
        from adapters.telegram_transport import make_transport

        bot = self.config().telegram[0]
        self.telegram_bot = bot
        transport = make_transport(bot.token, api_base=self.settings.telegram_api, timeout=15)
        try:
            reply = await transport.call(method, dict(params))
        finally:
            await transport.close()
        if not reply.get("ok"):
            code = reply.get("error_code")
            why = reply.get("description") or "lỗi không rõ"
            raise WebhookError(f"Telegram từ chối {method} (mã {code}): {why}")
        return reply.get("result")

    async def telegram_set(self) -> int:
        bot = self.config().telegram[0]
        if bot.mode != "webhook":
            raise WebhookError(
                f"Bot Telegram của đơn vị '{bot.district}' đang chạy long polling (mode: polling). "
                "Đổi thành mode: webhook (và đặt secret_token) trong flows.yaml rồi chạy lại."
            )
        official = "api.telegram.org" in self.settings.telegram_api
        url = f"{public_base(self.settings, https=official)}/webhooks/telegram/{bot.district}"
        params: dict[str, Any] = {
            "url": url,
            "secret_token": bot.secret_token,
            "allowed_updates": list(TELEGRAM_UPDATES),
            "max_connections": 40,
        }
        if self.args.drop_pending:
            params["drop_pending_updates"] = True
        await self._telegram("setWebhook", params)
        print(f"Đã đặt webhook Telegram cho đơn vị {bot.district}: {url}")
        kinds = ", ".join(TELEGRAM_UPDATES)
        print(f"Nhận các loại cập nhật: {kinds}; có mã bí mật (secret_token).")
        return await self.telegram_info(expected=url)

    async def telegram_info(self, expected: str | None = None) -> int:
        info = await self._telegram("getWebhookInfo", {})
        district = self.district.slug
        url = str(info.get("url") or "")
        if not url:
            print(f"Bot Telegram của đơn vị {district} chưa có webhook (nhận tin bằng polling).")
        else:
            print(f"Webhook Telegram của đơn vị {district}: {url}")
        if expected is None and url:
            base = str(self.settings.public_url or "").rstrip("/")
            expected = f"{base}/webhooks/telegram/{district}" if base else None
            if expected and url != expected:
                print(f"Lưu ý: khác địa chỉ Loa mong đợi ({expected}); chạy lại: loa webhook set.")
        print(f"Cập nhật đang chờ: {int(info.get('pending_update_count') or 0)}")
        if info.get("last_error_date"):
            print(
                f"Lỗi gần nhất lúc {_when(info['last_error_date'])}: "
                f"{info.get('last_error_message') or 'không rõ'}"
            )
        if info.get("allowed_updates"):
            print(f"Loại cập nhật: {', '.join(map(str, info['allowed_updates']))}")
        return 0

    async def telegram_delete(self) -> int:
        params = {"drop_pending_updates": True} if self.args.drop_pending else {}
        await self._telegram("deleteWebhook", params)
        print(f"Đã gỡ webhook Telegram của đơn vị {self.district.slug}.")
        if self.args.drop_pending:
            print("Các cập nhật đang chờ đã bị bỏ.")
        return 0

    # -- messenger ------------------------------------------------------------------------------

    def _messenger(self) -> tuple[Any, str]:
        from adapters.messenger import MessengerAdapter

        page = self.config().messenger[0]
        adapter = MessengerAdapter(
            app_secret=self.settings.messenger_app_secret,
            verify_token=self.settings.messenger_verify_token,
            app_id=self.settings.messenger_app_id or None,
            pages={page.page_id: (page.district, page.token)},
            session=self.http,
            graph_api=self.settings.graph_api,
            timeout=15,
        )
        self._page_token = page.token
        return adapter, page.page_id

    def greeting(self) -> str:
        given = self.options.get("greeting") if isinstance(self.options, Mapping) else None
        text = str(given).strip() if given else (
            f"Chào bạn! Đây là kênh trò chuyện của {self.district.name}. "
            "Bấm Bắt đầu để tham gia nhé."
        )
        text = unicodedata.normalize("NFC", text)
        if len(text) > 160:  # Meta's limit; a long district name must not break `set`
            text = text[:159].rstrip() + "…"
        return text

    async def messenger_set(self) -> int:
        from adapters.messenger import SUBSCRIBED_FIELDS

        adapter, page_id = self._messenger()
        await adapter.subscribe_app(page_id)
        fields = ", ".join(SUBSCRIBED_FIELDS)
        print(f"Đã đăng ký ứng dụng nhận sự kiện của Trang {page_id}: {fields}")
        await adapter.set_profile(page_id, greeting=self.greeting(), persistent_menu=DEFAULT_MENU)
        print("Đã đặt nút Bắt đầu (Get Started), lời chào và menu cố định của Trang.")
        print(f"Lời chào: {self.greeting()}")
        print(f"Menu: {', '.join(c.title for c in DEFAULT_MENU)}")
        self._messenger_reminder()
        return 0

    def _messenger_reminder(self) -> None:
        base = str(self.settings.public_url or "").rstrip("/") or "<LOA_PUBLIC_URL>"
        print(
            "Nhắc lại: trong trang ứng dụng Meta (Messenger > Webhooks), Callback URL là "
            f"{base}/webhooks/messenger và Verify token là giá trị của LOA_MESSENGER_VERIFY_TOKEN."
        )

    async def messenger_info(self) -> int:
        from adapters.messenger import SUBSCRIBED_FIELDS

        adapter, page_id = self._messenger()
        fields = await adapter.subscribed_fields(page_id)
        if not fields:
            print(f"Trang {page_id} chưa gửi sự kiện nào cho ứng dụng: chạy loa webhook set.")
            return 0
        print(f"Trang {page_id} gửi cho ứng dụng: {', '.join(fields)}")
        missing = [name for name in SUBSCRIBED_FIELDS if name not in fields]
        if missing:
            print(f"Còn thiếu: {', '.join(missing)} — chạy loa webhook set để đăng ký lại.")
        self._messenger_reminder()
        return 0

    async def messenger_delete(self) -> int:
        import aiohttp

        from adapters.messenger import classify_error, graph_root

        _, page_id = self._messenger()
        token = self._page_token
        proof = hmac.new(
            self.settings.messenger_app_secret.encode(), token.encode(), hashlib.sha256
        ).hexdigest()
        url = f"{graph_root(self.settings.graph_api)}/{page_id}/subscribed_apps"
        try:
            async with self.http.delete(
                url, params={"access_token": token, "appsecret_proof": proof},
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response:
                status, headers = response.status, response.headers
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise WebhookError("Không kết nối được Graph API để gỡ đăng ký.") from None
        if status >= 300:
            raise WebhookError(str(classify_error(status, body, headers)))
        print(f"Đã gỡ ứng dụng khỏi Trang {page_id}: Loa không nhận sự kiện của Trang nữa.")
        return 0

    # -- zalo bot -------------------------------------------------------------------------------

    def _zalobot(self) -> Any:
        from adapters.zalobot import ZaloBotAdapter

        bot = self.config().zalobot[0]
        self.zalobot_secret = bot.secret_token
        return ZaloBotAdapter(
            bot.district, token=bot.token, secret_token=bot.secret_token,
            session=self.http, api_base=self.settings.zalobot_api, timeout=15,
        )

    async def zalobot_set(self) -> int:
        adapter = self._zalobot()
        url = f"{public_base(self.settings, https=True)}/webhooks/zalobot/{self.district.slug}"
        await adapter.call("setWebhook", {"url": url, "secret_token": self.zalobot_secret})
        print(f"Đã đặt webhook Zalo Bot cho đơn vị {self.district.slug}: {url}")
        return await self.zalobot_info()

    async def zalobot_info(self) -> int:
        info = await self._zalobot().call("getWebhookInfo", {})
        url = str(info.get("url") or "") if isinstance(info, Mapping) else ""
        if url:
            print(f"Webhook Zalo Bot của đơn vị {self.district.slug}: {url}")
        else:
            print(f"Bot Zalo của đơn vị {self.district.slug} chưa có webhook.")
        if isinstance(info, Mapping) and info.get("updated_at"):
            print(f"Cập nhật lúc: {_when(float(info['updated_at']) / 1000)}")
        return 0

    async def zalobot_delete(self) -> int:
        await self._zalobot().call("deleteWebhook", {})
        print(f"Đã gỡ webhook Zalo Bot của đơn vị {self.district.slug}.")
        return 0

    # -- zalo OA --------------------------------------------------------------------------------

    def zalo_oa(self) -> int:
        base = str(self.settings.public_url or "").rstrip("/") or "<LOA_PUBLIC_URL>"
        print(
            "Zalo OA không có API đặt webhook: vào developers.zalo.me > ứng dụng > Webhook, "
            f"nhập URL {base}/webhooks/zalo, bật các sự kiện tin nhắn của người dùng và "
            "user_send_*, follow; xác thực tên miền (Loa phục vụ tệp zalo_verifier...html "
            "khi đặt LOA_ZALO_SITE_VERIFICATION)."
        )
        return 2


def main(args: argparse.Namespace) -> int:
    from bots.runtime import FlowsInvalid
    from bots.settings import SettingsError

    try:
        return asyncio.run(Command(args, os.environ).run())
    except FlowsInvalid as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        return 1
    except (WebhookError, AdapterError, SettingsError) as error:
        print(f"Lỗi: {error}", file=sys.stderr)
        return 1


__all__ = ["DEFAULT_MENU", "TELEGRAM_UPDATES", "Command", "WebhookError", "main"]
