"""Zalo OA echoes judged durably: an echo whose id is not yet recorded as sent is kept in the
records before the webhook is acknowledged, so a process killed during the grace period loses
no human reply — the sweep of any process (at start, then now and then) judges it. Judging is
idempotent: the bot's own echo is never a pause, and two judges at once pause once.

On SQLite and, when it answers, PostgreSQL (tests/databases.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bots.channel_state import ECHO_KEPT, ChannelState, UnjudgedEcho
from bots.channels import Channels
from bots.records.db import Database
from flows.vocab import Channel, ConversationKey
from tests.databases import database_url, db  # noqa: F401  (fixtures)

from .conftest import Platforms, Server, start_server, wait_until
from .people import ZaloUser
from .test_echoes import _handover_notices, _paused, _zalo_echo

LATER = timedelta(days=3)  # "every echo kept so far", as a cut-off time


# -- the records ------------------------------------------------------------------------------


def _echo(message_id: str, seen_at: datetime, channel: Channel = Channel.ZALO) -> UnjudgedEcho:
    key = ConversationKey("tan-phu", channel, "9300000000000000100")
    return UnjudgedEcho(channel, message_id, key, seen_at - timedelta(seconds=1), seen_at)


async def test_held_echoes_are_kept_once_listed_by_age_and_dropped_once(db: Database) -> None:  # noqa: F811
    state = ChannelState(db)
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    first, second = _echo("m-1", now), _echo("m-2", now + timedelta(seconds=5))
    assert await state.hold_echo(first)
    assert not await state.hold_echo(first)  # a retried webhook: still one row
    assert await state.hold_echo(second)
    assert await state.hold_echo(_echo("m-1", now, Channel.MESSENGER))  # another channel's id

    assert await state.held_echoes(Channel.ZALO, now) == []  # none older than `now`
    assert await state.held_echoes(Channel.ZALO, now + timedelta(seconds=1)) == [first]
    assert await state.held_echoes(Channel.ZALO, now + LATER) == [first, second]

    assert await state.drop_echo(Channel.ZALO, "m-1")
    assert not await state.drop_echo(Channel.ZALO, "m-1")  # a second judge: nothing to drop
    assert await state.held_echoes(Channel.ZALO, now + LATER) == [second]
    assert len(await state.held_echoes(Channel.MESSENGER, now + LATER)) == 1


async def test_echoes_left_unjudged_too_long_are_pruned(db: Database) -> None:  # noqa: F811
    state = ChannelState(db)
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    await state.hold_echo(_echo("old", now - ECHO_KEPT - timedelta(minutes=1)))
    await state.hold_echo(_echo("recent", now - timedelta(minutes=1)))
    assert await state.prune_echoes(now) == 1
    assert [e.message_id for e in await state.held_echoes(Channel.ZALO, now)] == ["recent"]


# -- the server -------------------------------------------------------------------------------


@pytest.fixture
async def server(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    platforms: Platforms,
    tmp_path: Path,
    database_url: str,  # noqa: F811
) -> AsyncIterator[Server]:
    yield await start_server(
        aiohttp_client, platforms, tmp_path, env_changes={"LOA_DATABASE_URL": database_url}
    )


def _database(server: Server) -> Database:
    database = server.runtime._db
    assert database is not None
    return database


async def _fresh_process(server: Server, *, sweep_every: float = 0.0) -> Channels:
    """Another `loa serve` process's channels over the same records and conversation store, with
    no memory of what the first one saw; its grace period has long run out."""
    channels = Channels(
        server.channels.config,
        server.channels.settings,
        database=_database(server),
        zalo_grace=0.0,
        zalo_sweep_every=sweep_every,
    )
    await channels.start(server.pipeline.ingest)
    return channels


async def _kill_echo_judgements(server: Server) -> int:
    """What a SIGKILL does to the in-process judgements: they never happen."""
    tasks = [t for t in server.channels._tasks if t.get_name() == "loa-zalo-echo"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return len(tasks)


async def _held(server: Server) -> list[str]:
    held = await server.channels.state.held_echoes(Channel.ZALO, datetime.now(UTC) + LATER)
    return [echo.message_id for echo in held]


async def test_a_human_echo_whose_process_died_pauses_at_the_next_start(server: Server) -> None:
    person = ZaloUser(server, "9300000000000000101")
    await person.say("xin chào")
    server.channels.zalo_grace = 3600.0  # this process would judge it an hour from now
    human = _zalo_echo(person.user_id, "zalo-human-killed", "Chào bạn, mình là cán bộ Đoàn.")
    assert (await server.post_zalo(human)).status == 200
    assert await _held(server) == ["zalo-human-killed"]  # kept before the acknowledgement
    assert await _kill_echo_judgements(server) == 1
    assert not await _paused(server, Channel.ZALO, person.user_id)

    fresh = await _fresh_process(server, sweep_every=60.0)  # sweeps at start
    try:
        await wait_until(lambda: _paused(server, Channel.ZALO, person.user_id))
        await wait_until(lambda: _no_echo_held(server))  # judged, then forgotten
    finally:
        await fresh.close()
    notices = await _handover_notices(server)
    assert len(notices) == 1 and "Zalo OA" in notices[0].text
    assert await person.say("cho mình hỏi", expect_reply=False) == []  # the bot stays quiet


async def _no_echo_held(server: Server) -> bool:
    return await _held(server) == []


async def test_the_bots_own_echo_recorded_late_never_pauses(server: Server) -> None:
    person = ZaloUser(server, "9300000000000000102")
    await person.say("xin chào")
    server.channels.zalo_grace = 3600.0
    echo = _zalo_echo(person.user_id, "zalo-own-late", "(echo)")
    assert (await server.post_zalo(echo)).status == 200
    assert await _held(server) == ["zalo-own-late"]
    # the send's call returns after its echo came back: its id is recorded now
    key = ConversationKey("tan-phu", Channel.ZALO, person.user_id)
    await server.channels.state.record_sent(Channel.ZALO, "zalo-own-late", key, datetime.now(UTC))
    await _kill_echo_judgements(server)

    fresh = await _fresh_process(server)
    try:
        assert await fresh.sweep_zalo_echoes() == 0
    finally:
        await fresh.close()
    assert await _held(server) == []  # judged: the bot's own, dropped
    await server.settle()
    assert not await _paused(server, Channel.ZALO, person.user_id)
    assert await _handover_notices(server) == []
    reply = await person.say("menu")
    assert reply  # the bot still answers


async def test_two_sweeps_at_once_pause_once(server: Server) -> None:
    person = ZaloUser(server, "9300000000000000103")
    await person.say("xin chào")
    server.channels.zalo_grace = 3600.0
    human = _zalo_echo(person.user_id, "zalo-human-twice", "Mình là cán bộ Đoàn.")
    for _ in range(2):  # Zalo retries the webhook: still one echo kept
        assert (await server.post_zalo(human)).status == 200
    assert await _held(server) == ["zalo-human-twice"]
    await _kill_echo_judgements(server)

    first, second = await _fresh_process(server), await _fresh_process(server)
    try:
        paused = await asyncio.gather(first.sweep_zalo_echoes(), second.sweep_zalo_echoes())
        assert sum(paused) == 1  # one stored the pause; the other's was a duplicate, or no row
        assert await first.sweep_zalo_echoes() == 0  # nothing left to judge
    finally:
        await first.close()
        await second.close()
    assert await _held(server) == []
    await wait_until(lambda: _paused(server, Channel.ZALO, person.user_id))
    await server.settle()
    assert len(await _handover_notices(server)) == 1


async def test_the_sweep_leaves_echoes_still_in_their_grace_period(server: Server) -> None:
    person = ZaloUser(server, "9300000000000000104")
    await person.say("xin chào")
    server.channels.zalo_grace = 3600.0
    human = _zalo_echo(person.user_id, "zalo-human-young", "Mình là cán bộ Đoàn.")
    assert (await server.post_zalo(human)).status == 200
    # the sending process's send might still return: not judged yet, by anyone
    assert await server.channels.sweep_zalo_echoes() == 0
    assert await _held(server) == ["zalo-human-young"]
    await _kill_echo_judgements(server)
    assert not await _paused(server, Channel.ZALO, person.user_id)
