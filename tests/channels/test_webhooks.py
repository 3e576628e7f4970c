"""The webhook routes: verification on the raw bytes, size cap, malformed bodies, retries,
routing by Page and OA, and acknowledging fast while the work happens later."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bots.records.models import ChannelIdentity
from bots.webhooks import MAX_BODY
from flows.vocab import Channel

from .conftest import (
    BENTRE_OA,
    BENTRE_PAGE,
    BENTRE_PAGE_TOKEN,
    TG_SECRET,
    VERIFY_TOKEN,
    ZALOBOT_SECRET,
    Platforms,
    Server,
    start_server,
    wait_until,
)
from .people import MessengerUser, TelegramUser, ZaloUser


async def _identities(server: Server) -> int:
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        return int(await session.scalar(select(func.count(ChannelIdentity.id))) or 0)


async def _nothing_stored(server: Server) -> None:
    await server.settle()
    assert await server.runtime.store.pending_keys() == []
    assert server.pipeline.processed == 0
    assert await _identities(server) == 0
    assert server.platforms.graph.delivered == []
    assert server.platforms.zalo.sends == []
    assert server.platforms.telegram.sent() == []


async def test_forged_or_missing_signatures_are_refused(server: Server) -> None:
    messenger = MessengerUser(server, "9000000000000001").body(
        message={"mid": "m_forged", "text": "xin chào"}
    )
    forged = hmac.new(b"not-the-app-secret", messenger, hashlib.sha256).hexdigest()
    client = server.client
    cases = [
        ("/webhooks/messenger", messenger, {"X-Hub-Signature-256": f"sha256={forged}"}),
        ("/webhooks/messenger", messenger, {}),
        ("/webhooks/messenger", messenger, {"X-Hub-Signature-256": "sha1=abc"}),
    ]
    zalo = ZaloUser(server, "9000000000000000001").body(
        "user_send_text", {"text": "xin chào", "msg_id": "forged-1"}
    )
    cases += [
        ("/webhooks/zalo", zalo, {"X-ZEvent-Signature": "mac=" + "0" * 64}),
        ("/webhooks/zalo", zalo, {}),
    ]
    telegram = json.dumps(TelegramUser(server, 9000001).update(text="xin chào")).encode()
    cases += [
        ("/webhooks/telegram/tan-phu", telegram, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}),
        ("/webhooks/telegram/tan-phu", telegram, {}),
    ]
    zalobot = json.dumps(
        {
            "event_name": "message.text.received",
            "message": {
                "message_id": "zb-forged",
                "date": int(time.time() * 1000),
                "from": {"id": "zb1", "is_bot": False},
                "chat": {"id": "zb1", "chat_type": "PRIVATE"},
                "text": "xin chào",
            },
        }
    ).encode()
    cases += [
        ("/webhooks/zalobot/tan-phu", zalobot, {"X-Bot-Api-Secret-Token": ZALOBOT_SECRET + "x"}),
        ("/webhooks/zalobot/tan-phu", zalobot, {}),
    ]
    for path, body, headers in cases:
        response = await client.post(path, data=body, headers=headers)
        assert response.status == 403, (path, headers)
    await _nothing_stored(server)
    # the same bodies, genuinely signed, are accepted: the refusals were about the signatures
    assert (await server.post_messenger(messenger)).status == 200
    assert (await server.post_zalo(zalo)).status == 200
    assert (await server.post_telegram(telegram)).status == 200
    assert (await server.post_zalobot(zalobot)).status == 200
    await server.settle()
    assert server.pipeline.processed == 4


async def test_a_body_over_the_cap_is_refused(server: Server) -> None:
    person = MessengerUser(server, "9000000000000002")
    body = person.body(message={"mid": "m_big", "text": "a" * (MAX_BODY + 10)})
    response = await server.post_messenger(body)
    assert response.status == 413
    await _nothing_stored(server)


async def test_malformed_bodies_after_a_valid_signature_are_acknowledged(server: Server) -> None:
    bodies = [b"not json at all", b'{"object": "page", "entry": "nonsense"}', b"[1, 2, 3]"]
    for body in bodies:
        assert (await server.post_messenger(body)).status == 200
    malformed_zalo = json.dumps(
        {"app_id": "1", "event_name": "user_send_text", "timestamp": "1772456700000"}
    ).encode()
    assert (await server.post_zalo(malformed_zalo)).status == 200
    assert (await server.post_telegram(b'{"update_id": "x", "message": 5}')).status == 200
    await _nothing_stored(server)


@pytest.mark.parametrize("concurrently", [False, True], ids=["one-after-another", "at-once"])
async def test_a_webhook_retried_five_times_is_processed_once(
    server: Server, concurrently: bool
) -> None:
    messenger = MessengerUser(server, "9000000000000003")
    zalo = ZaloUser(server, "9000000000000000003")
    telegram = TelegramUser(server, 9000003)
    m_body = messenger.body(message={"mid": "m_retry", "text": "xin chào"})
    z_body = zalo.body("user_send_text", {"text": "xin chào", "msg_id": "z_retry"})
    t_body = json.dumps(telegram.update(text="xin chào")).encode()
    posts = [
        lambda: server.post_messenger(m_body),
        lambda: server.post_zalo(z_body),
        lambda: server.post_telegram(t_body),
    ]
    for post in posts:
        if concurrently:
            responses = await asyncio.gather(*(post() for _ in range(5)))
        else:
            responses = [await post() for _ in range(5)]
        assert [r.status for r in responses] == [200] * 5
    await server.settle()
    assert server.pipeline.processed == 3
    for person in (messenger, zalo, telegram):
        await wait_until(lambda p=person: p.texts())
        assert len(person.texts()) == 1, person.texts()  # one answer each


async def test_messenger_handshake(server: Server) -> None:
    good = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "12345"}
    response = await server.client.get("/webhooks/messenger", params=good)
    assert response.status == 200 and await response.text() == "12345"
    bad = dict(good, **{"hub.verify_token": "guess"})
    assert (await server.client.get("/webhooks/messenger", params=bad)).status == 403


async def test_unknown_district_routes_are_not_found(server: Server) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    body = json.dumps(TelegramUser(server, 1).update(text="x")).encode()
    for path in ("/webhooks/telegram/ben-tre", "/webhooks/telegram/khong-co"):
        response = await server.client.post(path, data=body, headers=headers)
        assert response.status == 404, path
    assert (await server.client.post("/webhooks/zalobot/ben-tre", data=body)).status == 404


async def test_pages_and_oas_of_one_app_route_to_their_districts(server: Server) -> None:
    page = MessengerUser(server, "9000000000000004", page=BENTRE_PAGE)
    reply = await page.say("xin chào")
    assert any("Bạn muốn làm gì?" in t for t in reply)
    sends = [r for r in server.platforms.graph.sends if r.body["recipient"]["id"] == page.psid]
    assert {r.query["access_token"] for r in sends} == {BENTRE_PAGE_TOKEN}  # Bến Tre's Page
    oa = ZaloUser(server, "9000000000000000004", oa=BENTRE_OA)
    await oa.say("xin chào")
    tokens = {
        r.headers.get("access_token")
        for r in server.platforms.zalo.sends
        if r.body["recipient"]["user_id"] == oa.user_id
    }
    assert len(tokens) == 1 and f"-{BENTRE_OA}-" in tokens.pop()  # Bến Tre's OA token
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        rows = (await session.scalars(select(ChannelIdentity))).all()
    assert {(r.channel, r.district) for r in rows} == {
        (Channel.MESSENGER, "ben-tre"),
        (Channel.ZALO, "ben-tre"),
    }


async def test_acknowledged_at_once_while_the_work_waits(server: Server) -> None:
    """Fifty people send a screenshot at the same moment and the CDN takes 3 s per picture:
    every webhook is answered within 2 s (stored, not processed); the work follows."""
    server.platforms.cdn.delay = 3.0
    people = [MessengerUser(server, f"91000000000000{n:02d}") for n in range(25)]
    zalo = [ZaloUser(server, f"91000000000000000{n:02d}") for n in range(25)]
    cdn = server.platforms.cdn.url

    async def post(n: int) -> float:
        started = time.monotonic()
        if n < 25:
            body = people[n].body(
                message={
                    "mid": f"m_load_{n}",
                    "attachments": [{"type": "image", "payload": {"url": f"{cdn}/load{n}.png"}}],
                }
            )
            response = await server.post_messenger(body)
        else:
            url = f"{cdn}/zload{n}.png"
            image = {"type": "image", "payload": {"url": url}}
            body = zalo[n - 25].body(
                "user_send_image", {"msg_id": f"z_load_{n}", "attachments": [image]}
            )
            response = await server.post_zalo(body)
        assert response.status == 200
        return time.monotonic() - started

    times = await asyncio.gather(*(post(n) for n in range(50)))
    assert max(times) < 2.0, max(times)
    assert server.pipeline.processed < 50  # the pictures are still being fetched
    server.platforms.cdn.delay = 0.0
    await wait_until(lambda: server.pipeline.processed == 50, timeout=60)


async def test_without_messaging_channels_the_routes_are_not_found(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> None:
    only_browser = (
        "organisations:\n  thu:\n    name: Đơn vị thử\n    channels: {webchat: {}}\n"
        "flows:\n  menu:\n    title: Menu\n    steps:\n      - say: Xin chào!\n"
    )
    server = await start_server(aiohttp_client, platforms, tmp_path, flows_text=only_browser)
    assert server.runtime.channels is None
    for path in ("/webhooks/messenger", "/webhooks/zalo", "/webhooks/telegram/thu"):
        assert (await server.client.post(path, data=b"{}")).status == 404, path
    assert (await server.client.get("/oauth/zalo/start")).status == 404
