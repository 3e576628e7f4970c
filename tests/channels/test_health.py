"""The periodic channel health check: a Page Meta unsubscribed, a Telegram webhook failing or
unset → one open notice for the district's organisers and an ERROR log line; fixed → the notice
is closed; still broken at the next check → no second notice."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bots.channel_health import ChannelHealth
from bots.records.models import NotificationKind

from .conftest import BENTRE_PAGE, TANPHU_PAGE, Platforms, Server, start_server, wait_until

FIELDS = ["messages", "messaging_postbacks", "messaging_referrals", "message_echoes"]


async def _notices(server: Server) -> list[tuple[str, str]]:
    rows = await server.channels.state.open_notices()
    assert all(r.kind is NotificationKind.CHANNEL for r in rows)
    return [(r.district, r.text) for r in rows]


async def test_an_unsubscribed_page_is_noticed_once_and_closed_when_fixed(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    graph, telegram = server.platforms.graph, server.platforms.telegram
    graph.subscriptions[TANPHU_PAGE] = FIELDS  # Tân Phú's Page is fine
    telegram.webhook = {"url": "https://loa.example.vn/webhooks/telegram/tan-phu"}
    health = ChannelHealth(server.channels)

    with caplog.at_level(logging.ERROR, logger="loa.channels.health"):
        await health.check_once()
    notices = await _notices(server)
    assert len(notices) == 1
    district, text = notices[0]
    assert district == "ben-tre"
    assert BENTRE_PAGE in text and "loa webhook set" in text
    assert any(BENTRE_PAGE in r.getMessage() for r in caplog.records)

    await health.check_once()  # still unsubscribed: no second notice
    assert len(await _notices(server)) == 1

    graph.subscriptions[BENTRE_PAGE] = FIELDS[:2]  # re-subscribed, but without echoes
    await health.check_once()
    assert len(await _notices(server)) == 1  # the same problem key: still the one notice

    graph.subscriptions[BENTRE_PAGE] = FIELDS
    await health.check_once()
    assert await _notices(server) == []

    graph.subscriptions.pop(TANPHU_PAGE)  # Meta drops Tân Phú now: a new notice
    await health.check_once()
    assert [d for d, _ in await _notices(server)] == ["tan-phu"]


async def test_a_failing_telegram_webhook_is_noticed(server: Server) -> None:
    graph, telegram = server.platforms.graph, server.platforms.telegram
    graph.subscriptions[TANPHU_PAGE] = FIELDS
    graph.subscriptions[BENTRE_PAGE] = FIELDS
    health = ChannelHealth(server.channels)

    await health.check_once()  # no webhook set at all
    notices = await _notices(server)
    assert len(notices) == 1 and "chưa đặt webhook" in notices[0][1]

    telegram.webhook = {"url": "https://loa.example.vn/webhooks/telegram/tan-phu"}
    telegram.webhook_error = (int(time.time()) - 60, "Wrong response from the webhook: 502")
    await health.check_once()
    notices = await _notices(server)
    assert len(notices) == 1  # the same problem (the webhook), still open
    telegram.webhook_error = (int(time.time()) - 7200, "Connection timed out")  # long ago
    await health.check_once()
    assert await _notices(server) == []
    telegram.webhook_error = (int(time.time()) - 5, "Wrong response from the webhook: 502")
    await health.check_once()
    [(district, text)] = await _notices(server)
    assert district == "tan-phu" and "502" in text


async def test_the_check_runs_periodically(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> None:
    platforms.telegram.webhook = {"url": "https://loa.example.vn/webhooks/telegram/tan-phu"}
    server = await start_server(
        aiohttp_client, platforms, tmp_path, env_changes={"LOA_CHANNEL_HEALTH_EVERY": "0.2"}
    )
    await wait_until(lambda: _count(server, 2))
    polls = [r for r in platforms.graph.requests if r.path.endswith("/subscribed_apps")]
    await wait_until(
        lambda: len([r for r in platforms.graph.requests if r.path.endswith("/subscribed_apps")])
        > len(polls)
    )
    assert len(await _notices(server)) == 2  # both Pages unsubscribed, one notice each


async def _count(server: Server, n: int) -> bool:
    return len(await _notices(server)) == n
