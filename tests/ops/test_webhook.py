"""`loa webhook set|info|delete` against the fake platforms (Telegram, Graph API, Zalo Bot)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.messenger import SUBSCRIBED_FIELDS
from bots.cli import main
from tests.fakes.graph_api import VERSION, FakeGraphApi
from tests.fakes.telegram_api import FakeTelegramApi
from tests.ops.test_qr import FLOWS

PUBLIC = "https://loa.example.vn"
PAGE_TOKEN = "fake-page-token"
APP_SECRET = "fake-app-secret"
TG_SECRET = "tan-phu_webhook-secret"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "flows.yaml"
    path.write_text(FLOWS, encoding="utf-8")
    for name in list(os.environ):
        if name.startswith("LOA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LOA_PUBLIC_URL", PUBLIC)
    return path


async def webhook(config: Path, action: str, channel: str, *extra: str) -> int:
    """The real command, in a thread (it runs its own event loop beside the fakes')."""
    args = ["webhook", action, "--config", str(config), "--district", "tan-phu",
            "--channel", channel, *extra]
    return int(await asyncio.to_thread(main, args))


# -- Telegram ------------------------------------------------------------------------------------


async def test_telegram_set_info_delete(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeTelegramApi() as tg:
        monkeypatch.setenv("LOA_TELEGRAM_API", tg.url)
        monkeypatch.setenv("TP_TELEGRAM_TOKEN", tg.token)
        monkeypatch.setenv("TP_TELEGRAM_SECRET", TG_SECRET)

        assert await webhook(config, "set", "telegram", "--drop-pending") == 0
        assert tg.webhook["url"] == f"{PUBLIC}/webhooks/telegram/tan-phu"
        assert tg.webhook["secret_token"] == TG_SECRET
        assert tg.webhook["allowed_updates"] == ["message", "callback_query", "my_chat_member"]
        assert tg.webhook["drop_pending_updates"] in (True, "true")
        out = capsys.readouterr().out
        assert f"cho đơn vị tan-phu: {PUBLIC}/webhooks/telegram/tan-phu" in out
        assert TG_SECRET not in out and tg.token not in out

        tg.push_update({"update_id": 1, "message": {}})
        tg.webhook_error = (int(time.time()), "Connection timed out")
        assert await webhook(config, "info", "telegram") == 0
        out = capsys.readouterr().out
        assert "Cập nhật đang chờ: 1" in out
        assert "Lỗi gần nhất lúc" in out and "Connection timed out" in out

        assert await webhook(config, "delete", "telegram") == 0
        assert tg.webhook == {"url": ""}
        assert "Đã gỡ webhook Telegram của đơn vị tan-phu." in capsys.readouterr().out
        assert await webhook(config, "info", "telegram") == 0
        assert "chưa có webhook" in capsys.readouterr().out


async def test_telegram_refusals_are_explained(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeTelegramApi() as tg:
        monkeypatch.setenv("LOA_TELEGRAM_API", tg.url)
        monkeypatch.setenv("TP_TELEGRAM_TOKEN", tg.token)
        # A secret variable that is not set: its name is said, never a value.
        assert await webhook(config, "set", "telegram") == 1
        err = capsys.readouterr().err
        assert "TP_TELEGRAM_SECRET" in err and "chưa được đặt" in err
        monkeypatch.setenv("TP_TELEGRAM_SECRET", TG_SECRET)
        tg.fail_next(401, description="Unauthorized")
        assert await webhook(config, "set", "telegram") == 1
        assert "Telegram từ chối setWebhook (mã 401)" in capsys.readouterr().err
        assert tg.webhook == {"url": ""}
        monkeypatch.delenv("LOA_PUBLIC_URL")
        assert await webhook(config, "set", "telegram") == 1
        assert "Chưa đặt LOA_PUBLIC_URL" in capsys.readouterr().err


def test_a_polling_bot_gets_no_webhook(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BT_TELEGRAM_TOKEN", "123:abc")
    args = ["webhook", "set", "--config", str(config), "--district", "ben-tre",
            "--channel", "telegram"]
    assert main(args) == 1
    assert "mode: polling" in capsys.readouterr().err


# -- Messenger -----------------------------------------------------------------------------------


class GraphWithUnsubscribe(FakeGraphApi):
    """The Graph fake, plus DELETE /{page}/subscribed_apps."""

    async def start(self) -> GraphWithUnsubscribe:
        app = web.Application()
        app.router.add_post(f"/{VERSION}/me/messages", self._messages)
        app.router.add_post(f"/{VERSION}/me/messenger_profile", self._profile)
        app.router.add_post(f"/{VERSION}/{{page_id}}/subscribed_apps", self._subscribe)
        app.router.add_get(f"/{VERSION}/{{page_id}}/subscribed_apps", self._subscriptions)
        app.router.add_delete(f"/{VERSION}/{{page_id}}/subscribed_apps", self._unsubscribe)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        _recorded, answer = await self._record(request)
        if answer is not None:
            return answer
        self.subscriptions.pop(request.match_info["page_id"], None)
        return web.json_response({"success": True})


async def test_messenger_set_info_delete(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with GraphWithUnsubscribe(tokens={PAGE_TOKEN}, app_secret=APP_SECRET) as graph:
        monkeypatch.setenv("LOA_GRAPH_API", graph.url)
        monkeypatch.setenv("LOA_MESSENGER_APP_SECRET", APP_SECRET)
        monkeypatch.setenv("LOA_MESSENGER_VERIFY_TOKEN", "verify-me")
        monkeypatch.setenv("TP_PAGE_TOKEN", PAGE_TOKEN)

        assert await webhook(config, "set", "messenger") == 0
        assert graph.subscriptions["1029384756"] == list(SUBSCRIBED_FIELDS)
        profile: dict[str, Any] = graph.profiles[PAGE_TOKEN]
        # Get Started: a first-time user opening m.me/<page>?ref=… keeps the ref.
        assert profile["get_started"] == {"payload": "GET_STARTED"}
        [greeting] = profile["greeting"]
        assert "Quận Đoàn Tân Phú" in greeting["text"] and len(greeting["text"]) <= 160
        [menu] = profile["persistent_menu"]
        assert [i["payload"] for i in menu["call_to_actions"]] == [
            "cmd:menu", "cmd:status", "cmd:help"
        ]
        out = capsys.readouterr().out
        assert f"{PUBLIC}/webhooks/messenger" in out and "Get Started" in out
        assert PAGE_TOKEN not in out and APP_SECRET not in out

        assert await webhook(config, "info", "messenger") == 0
        out = capsys.readouterr().out
        assert "messages, messaging_postbacks" in out and "Còn thiếu" not in out

        graph.subscriptions["1029384756"] = ["messages"]
        assert await webhook(config, "info", "messenger") == 0
        assert "Còn thiếu: messaging_postbacks" in capsys.readouterr().out

        assert await webhook(config, "delete", "messenger") == 0
        assert "1029384756" not in graph.subscriptions
        assert "Đã gỡ ứng dụng khỏi Trang 1029384756" in capsys.readouterr().out

        graph.fail_next("invalid_token")
        assert await webhook(config, "set", "messenger") == 1
        assert "Token hoặc quyền của Trang" in capsys.readouterr().err


# -- Zalo Bot and Zalo OA ------------------------------------------------------------------------


class FakeZaloBotWebhooks:
    """The Zalo Bot API's webhook methods (channels.md §3.1), answering `{ok, result}`."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.webhook: dict[str, Any] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeZaloBotWebhooks:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._call)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def _call(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            refusal = {"ok": False, "error_code": 401, "description": "Unauthorized"}
            return web.json_response(refusal)
        body = await request.json() if await request.read() else {}
        method = request.match_info["method"]
        if method == "setWebhook":
            if not 8 <= len(body.get("secret_token", "")) <= 256:
                return web.json_response(
                    {"ok": False, "error_code": 400, "description": "secret_token invalid"}
                )
            self.webhook = {**body, "updated_at": int(time.time() * 1000)}
            return web.json_response({"ok": True, "result": self.webhook})
        if method == "getWebhookInfo":
            return web.json_response({"ok": True, "result": self.webhook or {"url": ""}})
        if method == "deleteWebhook":
            self.webhook = {}
            return web.json_response({"ok": True, "result": True})
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"})


async def test_zalobot_set_info_delete(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "2009876543:zalobot-secret-part"
    async with FakeZaloBotWebhooks(token) as bot:
        monkeypatch.setenv("LOA_ZALOBOT_API", bot.url)
        monkeypatch.setenv("TP_ZALOBOT_TOKEN", token)
        monkeypatch.setenv("TP_ZALOBOT_SECRET", "zalobot-webhook-secret")
        assert await webhook(config, "set", "zalobot") == 0
        assert bot.webhook["url"] == f"{PUBLIC}/webhooks/zalobot/tan-phu"
        assert bot.webhook["secret_token"] == "zalobot-webhook-secret"
        out = capsys.readouterr().out
        assert "Đã đặt webhook Zalo Bot" in out and "Cập nhật lúc" in out
        assert token not in out
        assert await webhook(config, "delete", "zalobot") == 0
        assert bot.webhook == {}
        assert await webhook(config, "info", "zalobot") == 0
        assert "chưa có webhook" in capsys.readouterr().out


def test_zalo_oa_says_where_to_set_it(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["webhook", "set", "--config", str(config), "--district", "tan-phu",
            "--channel", "zalo"]
    assert main(args) == 2
    assert f"{PUBLIC}/webhooks/zalo" in capsys.readouterr().out
