"""The periodic channel health check: a Page Meta unsubscribed, a Telegram or Zalo Bot webhook
failing, unset or taken by another tool, a Zalo OA that needs its admin → one open notice for the
district's organisers and an ERROR log line; fixed → the notice is closed; still broken at the
next check → no second notice."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from adapters.zalo import TokenPair
from bots.channel_health import ChannelHealth
from bots.records.models import NotificationKind, OrganiserNotification

from .conftest import (
    BENTRE_OA,
    BENTRE_PAGE,
    TANPHU_OA,
    TANPHU_PAGE,
    Platforms,
    Server,
    start_server,
    wait_until,
)

FIELDS = ["messages", "messaging_postbacks", "messaging_referrals", "message_echoes"]
ZALOBOT_HOOK = "https://loa.example.vn/webhooks/zalobot/tan-phu"


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
    server.platforms.zalobot.webhook = {"url": ZALOBOT_HOOK}
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
    server.platforms.zalobot.webhook = {"url": ZALOBOT_HOOK}
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
    platforms.zalobot.webhook = {"url": ZALOBOT_HOOK}
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


def _all_fine(platforms: Platforms) -> None:
    platforms.graph.subscriptions[TANPHU_PAGE] = FIELDS
    platforms.graph.subscriptions[BENTRE_PAGE] = FIELDS
    platforms.telegram.webhook = {"url": "https://loa.example.vn/webhooks/telegram/tan-phu"}
    platforms.zalobot.webhook = {"url": ZALOBOT_HOOK}


async def test_a_zalobot_webhook_unset_taken_or_failing_is_noticed_once_and_closed(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    platforms = server.platforms
    _all_fine(platforms)
    bot = platforms.zalobot
    health = ChannelHealth(server.channels)
    await health.check_once()
    assert await _notices(server) == []
    asked = [r for r in bot.requests if r.method == "getWebhookInfo"]
    assert len(asked) == 1 and asked[0].token == bot.token

    bot.webhook = {"url": ""}  # deleted (or never set)
    with caplog.at_level(logging.ERROR, logger="loa.channels.health"):
        await health.check_once()
    [(district, text)] = await _notices(server)
    assert district == "tan-phu" and "Zalo Bot" in text and "chưa đặt webhook" in text
    assert "loa webhook set --district tan-phu --channel zalobot" in text
    assert any("Zalo Bot" in r.getMessage() for r in caplog.records)
    assert bot.token not in caplog.text and bot.token not in text

    # another tool set the bot's webhook to itself: the same problem, still one notice
    bot.webhook = {"url": "https://n8n.example.com/webhook/zalo", "updated_at": 1772506800000}
    await health.check_once()
    assert len(await _notices(server)) == 1

    bot.webhook = {"url": ZALOBOT_HOOK + "/"}  # a trailing slash still reaches Loa
    await health.check_once()
    assert await _notices(server) == []

    # Zalo could not deliver a minute ago (dates in ms, like every Zalo Bot time)
    bot.webhook_error = (int(time.time() * 1000) - 60_000, "Connection timed out")
    bot.pending = 3
    await health.check_once()
    [(district, text)] = await _notices(server)
    assert "Connection timed out" in text and "Còn 3 tin đang chờ" in text
    bot.webhook_error = (int(time.time() * 1000) - 2 * 3600_000, "Connection timed out")
    await health.check_once()
    assert await _notices(server) == []

    bot.webhook_error = (int(time.time()) - 30, "Bad gateway")  # a date in seconds reads too
    await health.check_once()
    [(_, text)] = await _notices(server)
    assert "Bad gateway" in text


async def test_a_dead_zalobot_token_is_noticed_and_a_busy_zalo_is_not(server: Server) -> None:
    _all_fine(server.platforms)
    bot = server.platforms.zalobot
    health = ChannelHealth(server.channels)
    bot.fail_next(500)  # Zalo busy: logged only, nothing for the organisers
    await health.check_once()
    assert await _notices(server) == []
    bot.token = "1234567890:another-token"  # the bot was deleted or its token re-issued
    await health.check_once()
    [(district, text)] = await _notices(server)
    assert district == "tan-phu" and "mã bot không còn hiệu lực" in text


async def _reauthorise_notices(server: Server) -> list[OrganiserNotification]:
    query = select(OrganiserNotification).where(
        OrganiserNotification.kind == NotificationKind.REAUTHORISE,
        OrganiserNotification.handled_at.is_(None),
    )
    async with server.channels.state.db.reads() as session:
        return list((await session.scalars(query)).all())


async def test_a_zalo_oa_needing_reauthorisation_is_shown_to_organisers_once(
    server: Server,
) -> None:
    _all_fine(server.platforms)
    zalo, keeper = server.platforms.zalo, server.channels.zalo_keeper
    assert keeper is not None
    health = ChannelHealth(server.channels)
    await health.check_once()
    assert await _notices(server) == [] and await _reauthorise_notices(server) == []

    # Zalo refuses Bến Tre's refresh token (spent elsewhere, or the admin removed the app)
    token = await keeper.access_token(BENTRE_OA)
    zalo.refresh.clear()
    await keeper.invalidated(BENTRE_OA, token)
    [notice] = await _reauthorise_notices(server)  # the keeper's own alert
    assert notice.district == "ben-tre" and "cần cấp quyền lại" in notice.text
    assert "/oauth/zalo/start" in notice.text
    await health.check_once()
    assert await _notices(server) == []  # shown once, not twice

    # an organiser marks the alert handled, but nobody has authorised again: shown again
    async with server.channels.state.db.sessions() as session, session.begin():
        await session.execute(
            update(OrganiserNotification)
            .where(OrganiserNotification.id == notice.id)
            .values(handled_at=server.channels.clock())
        )
    await health.check_once()
    [(district, text)] = await _notices(server)
    assert district == "ben-tre" and BENTRE_OA in text and "cần cấp quyền lại" in text
    assert "https://loa.example.vn/oauth/zalo/start" in text and "-14014" in text
    await health.check_once()
    assert len(await _notices(server)) == 1

    # the OA admin authorises again (the OAuth callback stores the new pair): closed
    access, refresh = zalo.grant(BENTRE_OA)
    await keeper.store_initial(BENTRE_OA, TokenPair(access, refresh, 90_000))
    await health.check_once()
    assert await _notices(server) == []


async def test_a_zalo_oa_never_authorised_is_noticed(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> None:
    _all_fine(platforms)
    server = await start_server(aiohttp_client, platforms, tmp_path, authorise_zalo=False)
    health = ChannelHealth(server.channels)
    await health.check_once()
    notices = await _notices(server)
    assert sorted(d for d, _ in notices) == ["ben-tre", "tan-phu"]
    assert all("chưa cấp quyền" in t and "/oauth/zalo/start" in t for _, t in notices)
    keeper = server.channels.zalo_keeper
    assert keeper is not None
    access, refresh = platforms.zalo.grant(TANPHU_OA)
    await keeper.store_initial(TANPHU_OA, TokenPair(access, refresh, 90_000))
    await health.check_once()
    assert [d for d, _ in await _notices(server)] == ["ben-tre"]


ZALO_ONLY = """
menu: menu
organisations:
  tan-phu:
    name: Quận Đoàn Tân Phú
    channels:
      {channel}
flows:
  menu:
    title: Menu chính
    steps:
      - end: Chào bạn!
"""


@pytest.mark.parametrize(
    ("channel", "problem"),
    [
        ("zalobot: {token: $TANPHU_ZALOBOT_TOKEN, secret_token: $TANPHU_ZALOBOT_SECRET}",
         "chưa đặt webhook"),
        (f'zalo: {{oa_id: "{TANPHU_OA}"}}', "chưa cấp quyền"),
    ],
    ids=["zalobot", "zalo"],
)
async def test_the_check_runs_when_a_district_has_only_zalo(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    platforms: Platforms,
    tmp_path: Path,
    channel: str,
    problem: str,
) -> None:
    """It used to run only when some district had Messenger or Telegram."""
    server = await start_server(
        aiohttp_client,
        platforms,
        tmp_path,
        flows_text=ZALO_ONLY.replace("{channel}", channel),
        env_changes={"LOA_CHANNEL_HEALTH_EVERY": "0.2"},
        authorise_zalo=False,
    )
    await wait_until(lambda: _count(server, 1))  # no webhook set / never authorised
    [(district, text)] = await _notices(server)
    assert district == "tan-phu" and problem in text
