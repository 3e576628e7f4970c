"""Telegram long polling (`mode: polling`) against the fake Bot API's getUpdates: updates are
answered, button taps acknowledged, the offset is stored, and a restart neither skips an update
nor handles one twice."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from bots.records.models import ChannelCursor

from .conftest import HERE, TG_SECRET, TG_TOKEN, Platforms, Server, start_server, wait_until
from .people import TelegramUser

POLLING = (HERE / "flows.yaml").read_text("utf-8").replace(
    "telegram: {token: $TANPHU_TELEGRAM_TOKEN, secret_token: $TANPHU_TELEGRAM_SECRET}",
    "telegram: {token: $TANPHU_TELEGRAM_TOKEN, mode: polling}",
)
CURSOR = f"telegram:{TG_TOKEN.split(':')[0]}:offset"


async def _offset(server: Server) -> str | None:
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        row = await session.get(ChannelCursor, CURSOR)
        return row.value if row is not None else None


def _texts(platforms: Platforms, chat: int) -> list[str]:
    return [b.get("text") or b.get("caption") or "" for b in platforms.telegram.sent()
            if b.get("chat_id") == chat]


async def test_polling_answers_and_survives_a_restart(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> None:
    telegram = platforms.telegram
    telegram.webhook = {"url": "https://old.example/webhook"}  # left over: polling removes it
    person = TelegramUser.__new__(TelegramUser)
    person.chat_id = 7200000001
    first = await start_server(aiohttp_client, platforms, tmp_path, flows_text=POLLING)
    person.server = first
    await wait_until(lambda: telegram.webhook.get("url") == "")

    start = person.update(text="/start huyhieuso")
    telegram.push_update(start)
    await wait_until(lambda: any("Ban Tổ chức cần lưu" in t for t in _texts(platforms, 7200000001)))
    tap = {
        "update_id": person.update()["update_id"],  # ids keep growing, as Telegram's do
        "callback_query": {
            "id": "cbq-1",
            "from": {"id": 7200000001, "is_bot": False, "first_name": "Lan"},
            "chat_instance": "1",
            "data": "not-a-button-of-ours",
        },
    }
    agree = person.update(text="Đồng ý")
    telegram.push_update(tap)
    telegram.push_update(agree)
    await wait_until(lambda: any("Họ và tên" in t for t in _texts(platforms, 7200000001)))
    await wait_until(lambda: telegram.sent("answerCallbackQuery"))
    assert telegram.sent("answerCallbackQuery")[0]["callback_query_id"] == "cbq-1"
    await first.settle()
    assert first.pipeline.processed == 3
    assert await wait_until(lambda: _offset(first)) == str(agree["update_id"] + 1)

    # A polling district takes no webhooks.
    body = json.dumps(person.update(text="x")).encode()
    response = await first.client.post(
        "/webhooks/telegram/tan-phu",
        data=body,
        headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET},
    )
    assert response.status == 404

    await first.client.close()  # the server stops (the long poll is cancelled)

    # While it is down: Telegram still holds the last update (as if its confirmation never
    # arrived) and the person writes again.
    name = person.update(text="Nguyễn Thị Lan")
    telegram.push_update(agree)
    telegram.push_update(name)
    polls_before = len([r for r in telegram.requests if r.method == "getUpdates"])

    second = await start_server(aiohttp_client, platforms, tmp_path, flows_text=POLLING)
    person.server = second
    await wait_until(lambda: any("đơn vị nào" in t for t in _texts(platforms, 7200000001)))
    await second.settle()
    polls = [r for r in telegram.requests if r.method == "getUpdates"][polls_before:]
    assert polls[0].params.get("offset") == agree["update_id"] + 1  # the stored offset
    assert second.pipeline.processed == 1  # the name only: nothing twice, nothing skipped
    assert _texts(platforms, 7200000001).count(
        next(t for t in _texts(platforms, 7200000001) if "Họ và tên" in t)
    ) == 1
    assert await wait_until(lambda: _offset(second)) == str(name["update_id"] + 1)
    await second.client.close()


async def test_polling_keeps_going_after_telegram_refuses(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> None:
    telegram = platforms.telegram
    telegram.fail_next(500, methods=("getUpdates",))
    server = await start_server(aiohttp_client, platforms, tmp_path, flows_text=POLLING)
    person = TelegramUser(server, 7200000002)
    update = person.update(text="/start")
    telegram.push_update(update)
    await wait_until(lambda: _texts(platforms, 7200000002), timeout=20)
    polls = [r for r in telegram.requests if r.method == "getUpdates"]
    assert len(polls) >= 2  # refused once (HTTP 500), asked again after a pause
    assert await wait_until(lambda: _offset(server)) == str(update["update_id"] + 1)


async def test_only_process_zero_polls(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> None:
    """With `loa serve --processes N`, two pollers of one bot would fight over getUpdates
    (Telegram answers one of them 409): only process 0 polls; the others serve and send."""
    telegram = platforms.telegram
    second = await start_server(
        aiohttp_client, platforms, tmp_path / "p1", flows_text=POLLING,
        env_changes={"LOA_PROCESSES": "2", "LOA_PROCESS_INDEX": "1"},
    )
    first = await start_server(
        aiohttp_client, platforms, tmp_path / "p0", flows_text=POLLING,
        env_changes={"LOA_PROCESSES": "2", "LOA_PROCESS_INDEX": "0"},
    )
    await wait_until(lambda: [r for r in telegram.requests if r.method == "getUpdates"])
    person = TelegramUser.__new__(TelegramUser)
    person.chat_id = 7200000002
    telegram.push_update(person.update(text="/start huyhieuso"))
    await wait_until(lambda: any("Ban Tổ chức cần lưu" in t for t in _texts(platforms, 7200000002)))
    await first.settle()
    await second.settle()
    assert first.pipeline.processed == 1
    assert second.pipeline.processed == 0
    await second.client.close()
    await first.client.close()
