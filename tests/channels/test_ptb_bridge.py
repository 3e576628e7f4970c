"""The python-telegram-bot bridge (bots/ptb_bridge.py): a real PTB Application, pointed at the
fake Bot API, hands real `Update` objects to Loa's pipeline. Loa's replies (Vietnamese) reach
the fake through the application's own Bot; the application's own command is still answered by
PTB; an update delivered twice is handled once; an update is in the inbox before the handler
returns, so a crash right after it loses nothing. The example script runs against the fake in a
subprocess, and neither `loa serve` nor `loa check` ever imports PTB."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import aiohttp
import pytest
from telegram import Bot, Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    TypeHandler,
    filters,
)

from adapters.base import BadRequest, RecipientUnreachable, RetryLater
from adapters.telegram import error_for
from bots.ptb_bridge import BridgeError, LoaBridge, PtbTransport
from bots.runtime import FlowsInvalid
from flows.vocab import Channel, ConversationKey
from tests.fakes.telegram_api import FakeTelegramApi

from .conftest import TG_SECRET, TG_TOKEN, write_flows
from .people import TelegramUser
from .test_conversations import CONSENT, _converse, _records

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ptb_bot.py"
OWN = "Đây là bot riêng của Quận Đoàn Tân Phú (lệnh của ứng dụng PTB)."


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramApi]:
    async with FakeTelegramApi(token=TG_TOKEN) as fake:
        yield fake


def _env(tmp_path: Path) -> dict[str, str]:
    flows = write_flows(tmp_path / "conf")
    return {
        "LOA_CONFIG": str(flows),
        "LOA_DATA_DIR": str(tmp_path / "var"),
        "LOA_CHANNEL_HEALTH_EVERY": "0",
    }


async def _own_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(OWN)


def _application(fake: FakeTelegramApi) -> Application[Any, Any, Any, Any, Any, Any]:
    """A district's PTB application: its own /gioithieu, talking to the fake Bot API."""
    application = (
        ApplicationBuilder()
        .token(TG_TOKEN)
        .base_url(f"{fake.url}/bot")
        .base_file_url(f"{fake.url}/file/bot")
        .build()
    )
    application.add_handler(CommandHandler("gioithieu", _own_command))
    return application


def _observe(application: Any) -> list[int]:
    """Update ids that reach the application's group 1 (a catch-all of the district's)."""
    seen: list[int] = []

    async def record(update: Update, context: Any) -> None:
        seen.append(update.update_id)

    application.add_handler(TypeHandler(Update, record), group=1)
    return seen


@contextlib.asynccontextmanager
async def lifecycle(application: Any) -> AsyncIterator[Any]:
    """What `run_polling` does around the updater, hooks included, in the test's own loop."""
    await application.initialize()
    try:
        if application.post_init:
            await application.post_init(application)
        await application.start()
        try:
            yield application
        finally:
            await application.stop()
            if application.post_stop:
                await application.post_stop(application)
    finally:
        await application.shutdown()
        if application.post_shutdown:
            await application.post_shutdown(application)


class Harness:
    """What tests/channels/people.py expects of a server, over the PTB application."""

    def __init__(self, application: Any, bridge: LoaBridge, fake: FakeTelegramApi) -> None:
        self.application, self.bridge = application, bridge
        self.platforms = SimpleNamespace(telegram=fake)

    @property
    def runtime(self) -> Any:
        return self.bridge.runtime

    @property
    def pipeline(self) -> Any:
        return self.bridge.pipeline

    async def feed(self, update: dict[str, Any]) -> None:
        """As PTB's update fetcher does with what getUpdates (or a webhook) brought."""
        await self.application.process_update(Update.de_json(update, self.application.bot))

    async def settle(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.pipeline.idle()
            await asyncio.sleep(0.05)
            if not self.pipeline._tasks and not self.pipeline._running:
                return
        raise AssertionError("the pipeline did not settle")


class PtbUser(TelegramUser):
    server: Any

    async def _post(self, body: bytes) -> None:
        await self.server.feed(json.loads(body))


async def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# -- conversations -------------------------------------------------------------------------------


async def test_a_conversation_through_a_ptb_application(
    telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    application = _application(telegram)
    seen = _observe(application)
    started: list[bool] = []

    async def their_post_init(app: Any) -> None:  # the application's own hook still runs
        started.append(bridge.started)

    application.post_init = their_post_init
    bridge = LoaBridge("tan-phu", env=_env(tmp_path), sweep_every=0)
    bridge.install(application)
    async with lifecycle(application):
        assert started == [True]  # Loa was up before the application's hook and first update
        harness = Harness(application, bridge, telegram)
        person = PtbUser(harness, 7300000001)

        # The application's own command: answered by PTB, never seen by Loa.
        own = person.update(text="/gioithieu", entities=[_command_entity("/gioithieu")])
        assert await person.send(own) == [OWN]
        assert harness.pipeline.processed == 0
        assert await harness.runtime.store.pending_keys() == []

        first = await person.start("huyhieuso")
        await _converse(person, first, person.photo)
        await _records(harness, Channel.TELEGRAM, "7300000001")  # type: ignore[arg-type]

        # Loa's sample screenshot was uploaded through PTB; the evidence photos were fetched
        # from the fake with the application's bot token.
        uploads = [upload for method, upload in telegram.uploads if method == "sendPhoto"]
        assert len(uploads) == 1 and uploads[0].data.startswith(b"\x89PNG")
        assert len(telegram.file_requests) == 3
        # Loa's replies are plain text: no parse_mode reached Telegram.
        assert all("parse_mode" not in body for body in telegram.sent())
        # Loa took every update but the application's command; its later groups saw only that.
        assert seen == [own["update_id"]]
        runtime = bridge.runtime
    assert not bridge.started  # post_stop stopped Loa
    assert runtime._store is None  # and closed its store


async def test_an_inline_keyboard_tap_is_taken_and_answered(
    telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    application = _application(telegram)
    bridge = LoaBridge("tan-phu", env=_env(tmp_path), keyboard="inline", sweep_every=0)
    bridge.install(application)
    async with lifecycle(application):
        harness = Harness(application, bridge, telegram)
        person = PtbUser(harness, 7300000002)
        first = await person.start("huyhieuso")
        assert any(CONSENT in text for text in first)
        keyboard = person.messages()[-1]["reply_markup"]["inline_keyboard"]
        button = keyboard[0][0]
        assert button["text"] == "Đồng ý"
        tap = {
            "update_id": person.update()["update_id"],
            "callback_query": {
                "id": "cbq-ptb-1",
                "from": {"id": 7300000002, "is_bot": False, "first_name": "Lan"},
                "chat_instance": "1",
                "data": button["callback_data"],
                "message": {  # the bot's own message, as Telegram quotes it with a tap
                    "message_id": 99,
                    "date": int(time.time()),
                    "chat": {"id": 7300000002, "type": "private"},
                    "text": person.texts()[-1],
                    "reply_markup": {"inline_keyboard": keyboard},
                },
            },
        }
        reply = await person.send(tap)
        assert any("Họ và tên của bạn" in text for text in reply), reply
        await wait_for(lambda: telegram.sent("answerCallbackQuery"))
        assert telegram.sent("answerCallbackQuery")[0]["callback_query_id"] == "cbq-ptb-1"


# -- durability and de-duplication ---------------------------------------------------------------


async def test_an_update_is_in_the_inbox_before_the_handler_returns(
    telegram: FakeTelegramApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(tmp_path)
    application = _application(telegram)
    seen = _observe(application)
    bridge = LoaBridge("tan-phu", env=env, sweep_every=0)
    bridge.install(application)
    person = PtbUser(None, 7300000003)
    start = person.update(text="/start huyhieuso", entities=[_command_entity("/start")])
    key = ConversationKey("tan-phu", Channel.TELEGRAM, "7300000003")
    async with lifecycle(application):
        harness = person.server = Harness(application, bridge, telegram)
        store = harness.runtime.store
        # The worker never runs, as if the process died the moment the handler returned.
        held: list[Any] = []
        monkeypatch.setattr(
            harness.pipeline, "schedule", lambda k, claim=None: held.append((k, claim))
        )
        await harness.feed(start)
        assert await store.pending_keys() == [key]  # durable before PTB moved on
        await harness.feed(start)  # the same update again: a duplicate, not scheduled twice
        assert [k for k, _ in held] == [key]
        assert seen == []  # Loa took both: the application's later groups saw neither
        claim = held[0][1]
        if claim is not None:
            await store.release(claim)  # the dead worker's lease, as its expiry would
    assert telegram.sent() == []  # nothing was answered before the "crash"

    # Started again on the same data: recovery handles the stored update, once.
    application = _application(telegram)
    bridge = LoaBridge("tan-phu", env=env, sweep_every=0)
    bridge.install(application)
    async with lifecycle(application):
        harness = person.server = Harness(application, bridge, telegram)
        await wait_for(lambda: any(CONSENT in text for text in person.texts()))
        await harness.settle()
        await harness.feed(start)  # Telegram re-sends it after the restart: still a duplicate
        await harness.settle()
        assert harness.pipeline.processed == 1
        assert sum(CONSENT in text for text in person.texts()) == 1
        assert await harness.runtime.store.pending_keys() == []


async def test_the_same_update_twice_is_handled_once(
    telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    # An application driven by hand: the handler placed by the district, Loa's runtime held
    # open by `running()` instead of the hooks run_polling calls.
    application = _application(telegram)
    bridge = LoaBridge("tan-phu", env=_env(tmp_path), sweep_every=0)
    application.add_handler(bridge.handler(application), group=-1)
    async with application, bridge.running(application):
        assert bridge.started
        harness = Harness(application, bridge, telegram)
        person = PtbUser(harness, 7300000004)
        first = await person.start()
        assert first and "Chào bạn" in first[0]
        again = person.update(text="menu")
        await person.send(again)
        before = list(person.texts())
        await harness.feed(again)  # a second delivery of one update (a retried webhook)
        await harness.application.process_update(Update.de_json(again, application.bot))
        await harness.settle()
        assert person.texts() == before
        assert harness.pipeline.processed == 2  # /start and "menu", each once
    assert not bridge.started


# -- what stays with the application -------------------------------------------------------------


async def test_what_loa_does_not_take_reaches_the_application(
    telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    application = _application(telegram)
    taps: list[str] = []

    async def app_button(update: Update, context: Any) -> None:
        assert update.callback_query is not None
        taps.append(str(update.callback_query.data))

    application.add_handler(CallbackQueryHandler(app_button, pattern=r"^app:"))
    seen = _observe(application)
    bridge = LoaBridge(
        "tan-phu",
        env=_env(tmp_path),
        leave_commands=["/lich"],
        only=~filters.Regex(r"^giờ làm việc"),
        sweep_every=0,
    )
    bridge.install(application)
    async with lifecycle(application):
        harness = Harness(application, bridge, telegram)
        person = PtbUser(harness, 7300000005)
        message = person.message
        group = person.update(text="xin chào cả nhóm")
        group["message"]["chat"] = {"id": -100123, "type": "supergroup", "title": "Chi đoàn"}
        edited = {"update_id": person.update()["update_id"], "edited_message": message(text="a")}
        button = {
            "update_id": person.update()["update_id"],
            "callback_query": {
                "id": "cbq-app",
                "from": {"id": 7300000005, "is_bot": False, "first_name": "Lan"},
                "chat_instance": "2",
                "data": "app:thich",
                "message": message(text="Bạn thích bài này chứ?"),
            },
        }
        schedule = person.update(text="/lich tuần này", entities=[_command_entity("/lich")])
        addressed = person.update(
            text="/gioithieu@LoaFakeBot", entities=[_command_entity("/gioithieu@LoaFakeBot")]
        )
        hours = person.update(text="giờ làm việc của Đoàn?")
        left = [group, edited, button, schedule, addressed, hours]
        for update in left:
            await harness.feed(update)
        assert seen == [u["update_id"] for u in left]
        assert taps == ["app:thich"]
        assert [body["text"] for body in telegram.sent()] == [OWN]
        assert await harness.runtime.store.pending_keys() == []
        assert harness.pipeline.processed == 0

        taken = person.update(text="menu")
        reply = await person.send(taken)
        assert any("Chào bạn" in text for text in reply), reply
        assert taken["update_id"] not in seen


async def test_a_district_missing_from_the_flows_is_refused(
    telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    application = _application(telegram)
    bridge = LoaBridge("khong-co", env=_env(tmp_path), sweep_every=0)
    bridge.install(application)
    await application.initialize()
    try:
        with pytest.raises(BridgeError, match="không có đơn vị 'khong-co'"):
            await application.post_init(application)
        assert not bridge.started
        broken = tmp_path / "broken"
        env = {**_env(tmp_path), "LOA_CONFIG": str(write_flows(broken, "flows: {x: 1}\n"))}
        with pytest.raises(FlowsInvalid):
            await LoaBridge("tan-phu", env=env).start(application)
    finally:
        await application.shutdown()


# -- sending through PTB's Bot -------------------------------------------------------------------


# PTB itself reads RetryAfter.retry_after in the exception's constructor (deprecated int form).
@pytest.mark.filterwarnings("ignore:Deprecated since version v22.2")
async def test_refusals_map_onto_loa_delivery_errors(telegram: FakeTelegramApi) -> None:
    bot = Bot(TG_TOKEN, base_url=f"{telegram.url}/bot", base_file_url=f"{telegram.url}/file/bot")
    transport = PtbTransport(bot)
    body = json.dumps({"chat_id": 42, "text": "Xin chào"}).encode()
    async with bot:
        reply = await transport("sendMessage", body)
        assert reply["ok"] and reply["result"]["text"] == "Xin chào"

        telegram.fail_next(429, retry_after=3)
        error = error_for(await transport("sendMessage", body))
        assert isinstance(error, RetryLater) and error.retry_after == 3
        telegram.fail_next(403)
        assert isinstance(error_for(await transport("sendMessage", body)), RecipientUnreachable)
        telegram.fail_next(400, description="Bad Request: chat not found")
        assert isinstance(error_for(await transport("sendMessage", body)), RecipientUnreachable)
        telegram.fail_next(400, description="Bad Request: message text is empty")
        assert isinstance(error_for(await transport("sendMessage", body)), BadRequest)
        telegram.fail_next(500)
        assert isinstance(error_for(await transport("sendMessage", body)), RetryLater)
        unknown = await transport("deleteMessage", body)
        assert unknown["error_code"] == 400


# -- the example ---------------------------------------------------------------------------------


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ptb_bot_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _line(stream: asyncio.StreamReader, prefix: str) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"the example ended before printing {prefix!r}")
        line = raw.decode().strip()
        if line.startswith(prefix):
            return line


async def test_the_example_script_answers_through_the_fake(
    telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    example = _example()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOA_", "TELEGRAM_"))}
    env.update(_env(tmp_path))
    with socket.socket() as probe:  # a free port for Loa's console (LOA_PORT must be > 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env.update(TELEGRAM_BOT_TOKEN=TG_TOKEN, LOA_DISTRICT="tan-phu")
    env.update(LOA_HOST="127.0.0.1", LOA_PORT=str(port))
    log = (tmp_path / "example.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--base-url", telegram.url,
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=log,
    )
    assert process.stdout is not None
    person = TelegramUser.__new__(TelegramUser)
    person.chat_id = 7300000006
    person.server = SimpleNamespace(platforms=SimpleNamespace(telegram=telegram))  # type: ignore[assignment]
    try:
        await asyncio.wait_for(_line(process.stdout, "Bot @LoaFakeBot đang chạy"), 60)
        console = await asyncio.wait_for(_line(process.stdout, "Bảng điều khiển:"), 10)
        base = console.split(": ", 1)[1].removesuffix("admin/")

        start = "/start huyhieuso"
        telegram.push_update(person.update(text=start, entities=[_command_entity("/start")]))
        await wait_for(lambda: any(CONSENT in text for text in person.texts()), 30)
        own = "/gioithieu"
        telegram.push_update(person.update(text=own, entities=[_command_entity(own)]))
        await wait_for(lambda: example.GIOI_THIEU in person.texts(), 30)
        async with aiohttp.ClientSession() as http, http.get(f"{base}healthz") as response:
            health = await response.json()
        assert health["ok"] and health["processed"] == 1  # /gioithieu stayed with PTB
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 60)
        log.close()
    assert code == 0, (tmp_path / "example.log").read_text()[-3000:]
    assert "Bot đã dừng." in (await process.stdout.read()).decode()


# -- imports -------------------------------------------------------------------------------------

PROBE = r"""
import asyncio, json, sys
loaded = lambda name: any(m == name or m.startswith(name + ".") for m in sys.modules)
env = json.loads(sys.argv[1])

from bots.cli import main as cli
check = cli(["check", env["LOA_CONFIG"]])

from bots.runtime import Runtime
from bots.server import build_app
from bots.settings import from_env

async def serve():
    runtime = Runtime(from_env(env), env=env, sweep_every=0)
    build_app(runtime)  # every route, the Telegram webhook included
    await runtime.start()
    await runtime.stop()

asyncio.run(serve())
after_serve = loaded("telegram")
import bots.ptb_bridge  # the bridge module alone does not load PTB either
print(json.dumps({"check": check, "serve": after_serve, "bridge": loaded("telegram"),
                  "aiogram": loaded("aiogram")}))
"""

FLOWS = """\
organisations:
  tan-phu:
    name: Quận Đoàn Tân Phú
    channels:
      telegram: {token: $TG_TOKEN, secret_token: $TG_SECRET}
flows:
  menu:
    title: Menu
    steps:
      - say: Xin chào!
"""


def test_loa_serve_and_check_never_import_ptb(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "flows.yaml").write_text(FLOWS, encoding="utf-8")
    env = {
        "LOA_CONFIG": str(folder / "flows.yaml"),
        "LOA_DATA_DIR": str(tmp_path / "var"),
        "LOA_TELEGRAM_API": "http://127.0.0.1:9",
        "LOA_CHANNEL_HEALTH_EVERY": "0",
        "TG_TOKEN": TG_TOKEN,
        "TG_SECRET": TG_SECRET,
    }
    process = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(env)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result == {"check": 0, "serve": False, "bridge": False, "aiogram": True}


def _imports_ptb(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        if any(name == "telegram" or name.startswith("telegram.") for name in names):
            lines.append(node.lineno)
    return lines


def test_only_the_bridge_imports_ptb_and_only_lazily() -> None:
    offenders = []
    for package in ("flows", "adapters", "bots"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "bots" / "ptb_bridge.py":
                continue
            lines = _imports_ptb(ast.parse(path.read_text("utf-8")))
            offenders += [f"{path.relative_to(REPO)}:{line}" for line in lines]
    assert offenders == []
    bridge = ast.parse((REPO / "bots" / "ptb_bridge.py").read_text("utf-8"))
    top_level = [
        node
        for node in bridge.body
        if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    ]
    imports = [node for node in top_level if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports and not any(_imports_ptb(node) for node in imports)
    assert _imports_ptb(bridge)  # it does use PTB, inside functions


def _command_entity(command: str) -> dict[str, Any]:
    return {"offset": 0, "length": len(command), "type": "bot_command"}
