"""Ten pictures sent at once arrive as the platform sends them — Messenger: one message with ten
attachments; Zalo OA: ten events; Telegram: an album of ten updates — and every one is fetched,
stored and handed to the engine, in the order it was sent."""

from __future__ import annotations

import asyncio
import json

from flows.vocab import Inbound

from .conftest import Server, wait_until
from .people import MessengerUser, TelegramUser, ZaloUser


def _watch(server: Server) -> list[str]:
    """The message ids the pipeline captures media for, in order."""
    seen: list[str] = []
    capture = server.pipeline.capture

    async def watching(inbound: Inbound) -> Inbound:
        seen.append(inbound.message_id)
        return await capture(inbound)

    server.pipeline.capture = watching
    return seen


def _stored(server: Server) -> set[str]:
    files = server.runtime.settings.files_dir
    if not files.exists():
        return set()
    return {p.name.split(".")[0] for p in files.rglob("*") if p.is_file()}


async def test_messenger_ten_attachments_in_one_message(server: Server) -> None:
    seen = _watch(server)
    person = MessengerUser(server, "9200000000000001")
    cdn = server.platforms.cdn.url
    names = [f"msg-{n}" for n in range(1, 11)]
    attachments = [{"type": "image", "payload": {"url": f"{cdn}/{n}.png"}} for n in names]
    response = await server.post_messenger(
        person.body(message={"mid": "m_album", "attachments": attachments})
    )
    assert response.status == 200
    await wait_until(lambda: server.pipeline.processed == 10, timeout=30)
    await server.settle()
    assert seen == [f"m_album#{n}" for n in range(1, 11)]
    assert server.platforms.cdn.fetched == [f"/{n}.png" for n in names]
    assert len(_stored(server)) == 10


async def test_zalo_ten_image_events(server: Server) -> None:
    seen = _watch(server)
    person = ZaloUser(server, "9200000000000000001")
    cdn = server.platforms.cdn.url
    for n in range(1, 11):
        url = f"{cdn}/zalo-{n}.png"
        image = {"type": "image", "payload": {"url": url}}
        body = person.body("user_send_image", {"msg_id": f"z_img_{n:02d}", "attachments": [image]})
        assert (await server.post_zalo(body)).status == 200
    await wait_until(lambda: server.pipeline.processed == 10, timeout=30)
    await server.settle()
    assert seen == [f"z_img_{n:02d}" for n in range(1, 11)]
    assert server.platforms.cdn.fetched == [f"/zalo-{n}.png" for n in range(1, 11)]
    assert len(_stored(server)) == 10


async def test_telegram_album_of_ten(server: Server) -> None:
    seen = _watch(server)
    person = TelegramUser(server, 9200001)
    updates = [
        person.photo_update(f"album-{n}", media_group_id="13900000000000042") for n in range(1, 11)
    ]
    updates[0]["message"]["caption"] = "Minh chứng (10 ảnh)"
    for update in updates:
        assert (await server.post_telegram(json.dumps(update).encode())).status == 200
    await wait_until(lambda: server.pipeline.processed == 10, timeout=30)
    await server.settle()
    assert seen == [str(u["update_id"]) for u in updates]
    assert server.platforms.telegram.file_requests == [
        f"photos/AgAC-test-album-{n}.jpg" for n in range(1, 11)
    ]
    assert len(_stored(server)) == 10


async def test_telegram_album_parts_arriving_at_once_are_all_kept(server: Server) -> None:
    """Telegram may deliver an album's parts on parallel connections: all are kept, each once."""
    seen = _watch(server)
    person = TelegramUser(server, 9200002)
    updates = [person.photo_update(f"par-{n}", media_group_id="139000000000077") for n in range(10)]
    bodies = [json.dumps(u).encode() for u in updates]
    responses = await asyncio.gather(*(server.post_telegram(b) for b in bodies + bodies))
    assert {r.status for r in responses} == {200}
    await wait_until(lambda: server.pipeline.processed == 10, timeout=30)
    await server.settle()
    assert sorted(seen) == sorted(str(u["update_id"]) for u in updates)
    assert len(_stored(server)) == 10
