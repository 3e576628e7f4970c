"""The token keeper in one process, on SQLite and PostgreSQL, against the fake OAuth server
(single-use rotating refresh tokens: a spent one, and the access token it replaced, stop
working)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.base import AuthExpired, RetryLater
from adapters.zalo import TokenPair, ZaloAdapter, exchange_code
from bots.records.db import Database, open_database
from bots.records.models import (
    AuditEntry,
    NotificationKind,
    OrganiserNotification,
    ZaloTokenPair,
)
from bots.zalo_tokens import RefreshOutcome, ZaloNotAuthorised, ZaloTokenKeeper
from flows.vocab import Channel, ConversationKey
from tests.fakes.zalo_api import TOKEN_PATH, FakeZaloApi
from tests.zalo_tokens.conftest import KeeperFactory
from tests.zalo_tokens.support import DISTRICT, OA, refresh_calls

HOUR = 3600


async def grant(keeper: ZaloTokenKeeper, zalo: FakeZaloApi, lifetime: int, oa: str = OA) -> str:
    """Store a pair the fake issued, its access token living `lifetime` seconds more."""
    access, refresh = zalo.grant(oa)
    await keeper.store_initial(oa, TokenPair(access, refresh, lifetime))
    return access


def newest_access(zalo: FakeZaloApi, oa: str = OA) -> str:
    """The one access token of `oa` the fake still accepts."""
    tokens = [token for token, owner in zalo.access.items() if owner == oa]
    assert len(tokens) == 1, tokens
    return tokens[0]


async def notifications(db: Database) -> list[OrganiserNotification]:
    async with db.reads() as session:
        return list(await session.scalars(select(OrganiserNotification)))


async def received_refresh(zalo: FakeZaloApi, count: int = 1) -> None:
    """Wait until the fake has received `count` refresh requests."""
    for _ in range(500):
        if refresh_calls(zalo) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the fake never received the refresh")


async def test_a_fresh_token_is_returned_without_calling_zalo(
    make_keeper: KeeperFactory, zalo: FakeZaloApi
) -> None:
    keeper = make_keeper()
    access = await grant(keeper, zalo, 25 * HOUR)
    assert await keeper.access_token(OA) == access
    assert await keeper.access_token(OA) == access
    assert refresh_calls(zalo) == 0


async def test_a_token_expiring_within_the_margin_is_refreshed_and_saved_first(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, db: Database
) -> None:
    keeper = make_keeper()
    old = await grant(keeper, zalo, 30 * 60)  # half an hour left, margin one hour
    token = await keeper.access_token(OA)
    assert token != old
    assert token == newest_access(zalo)  # Zalo accepts it
    assert refresh_calls(zalo) == 1
    async with db.reads() as session:
        row = await session.get(ZaloTokenPair, OA)
        assert row is not None
        assert row.access_token == token
        assert row.refresh_token in zalo.refresh  # the unspent one is what is stored
        assert row.generation == 2
        assert row.lease_owner is None and row.lease_until is None
        left = row.access_expires_at - datetime.now(UTC)
        assert timedelta(hours=24) < left <= timedelta(hours=25)
        actions = list(await session.scalars(select(AuditEntry.action)))
    assert actions == ["zalo_oa_authorised", "zalo_token_refreshed"]
    # the next caller finds the new pair and does not refresh again
    assert await keeper.access_token(OA) == token
    assert refresh_calls(zalo) == 1


async def test_the_clock_decides_when_a_pair_is_due(
    make_keeper: KeeperFactory, zalo: FakeZaloApi
) -> None:
    start = datetime.now(UTC)
    access = await grant(make_keeper(clock=lambda: start), zalo, 25 * HOUR)
    later = make_keeper(clock=lambda: datetime.now(UTC) + timedelta(hours=23, minutes=30))
    assert await later.access_token(OA) == access
    assert refresh_calls(zalo) == 0
    due = make_keeper(clock=lambda: datetime.now(UTC) + timedelta(hours=24, minutes=30))
    assert await due.access_token(OA) == newest_access(zalo) != access
    assert refresh_calls(zalo) == 1


async def test_proactive_refresh_rotates_only_the_pairs_that_are_due(
    make_keeper: KeeperFactory, zalo: FakeZaloApi
) -> None:
    keeper = make_keeper()
    due = await grant(keeper, zalo, 20 * 60, oa="due")
    fresh = await grant(keeper, zalo, 20 * HOUR, oa="fresh")
    outcomes = await keeper.proactive_refresh()
    assert outcomes == {"due": RefreshOutcome.REFRESHED, "fresh": RefreshOutcome.FRESH}
    assert refresh_calls(zalo) == 1
    assert await keeper.access_token("due") == newest_access(zalo, "due") != due
    assert await keeper.access_token("fresh") == fresh
    again = await keeper.proactive_refresh(["due", "fresh", "never-authorised"])
    assert again == {
        "due": RefreshOutcome.FRESH,
        "fresh": RefreshOutcome.FRESH,
        "never-authorised": RefreshOutcome.NOT_AUTHORISED,
    }
    assert refresh_calls(zalo) == 1


async def test_minus_216_refreshes_once_and_the_retry_uses_the_new_token(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, http: aiohttp.ClientSession
) -> None:
    keeper = make_keeper()
    old = await grant(keeper, zalo, 20 * HOUR)
    adapter = ZaloAdapter(
        app_id=zalo.app_id,
        oa_secret_key="oa-secret",
        accounts={OA: (DISTRICT, keeper)},
        session=http,
        api_base=zalo.url,
    )
    zalo.revoke(old)  # Zalo stops accepting it (an admin action, a rotation elsewhere...)
    keys = [ConversationKey(DISTRICT, Channel.ZALO, f"user{n}") for n in range(3)]
    results = await asyncio.gather(
        *(adapter.send_message(key, {"text": "Xin chào"}) for key in keys),
        return_exceptions=True,
    )
    assert all(isinstance(r, AuthExpired) for r in results), results
    assert refresh_calls(zalo) == 1  # three refusals of one token, one refresh
    assert await adapter.send_message(keys[0], {"text": "Xin chào"})
    assert zalo.sends[-1].headers["access_token"] == newest_access(zalo) != old
    assert zalo.messages == [{"text": "Xin chào"}]


async def test_a_stale_invalidation_after_someone_else_refreshed_does_nothing(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, database_url: str
) -> None:
    first = make_keeper()
    old = await grant(first, zalo, 20 * 60)
    other_db = await open_database(database_url, migrate=False)  # another process's engine
    try:
        second = make_keeper(other_db)
        new = await first.access_token(OA)  # rotates
        assert refresh_calls(zalo) == 1
        await second.invalidated(OA, old)  # the other process saw -216 on the old token
        assert refresh_calls(zalo) == 1
        assert await second.access_token(OA) == new
        # whereas the token that is stored failing does cause one refresh
        await second.invalidated(OA, new)
        assert refresh_calls(zalo) == 2
        assert await first.access_token(OA) == newest_access(zalo) != new
    finally:
        await other_db.close()


async def test_a_refused_refresh_flags_the_oa_notifies_organisers_and_stops_asking(
    make_keeper: KeeperFactory,
    zalo: FakeZaloApi,
    db: Database,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keeper = make_keeper(start_url="https://loa.tanphu.vn/oauth/zalo/start")
    access, refresh = zalo.grant(OA)
    await keeper.store_initial(OA, TokenPair(access, refresh, 10 * 60))
    zalo.refresh.clear()  # the refresh token was spent elsewhere (or the admin revoked it)
    with caplog.at_level(logging.INFO), pytest.raises(ZaloNotAuthorised) as raised:
        await keeper.access_token(OA)
    assert isinstance(raised.value, AuthExpired)  # the outbox keeps the message pending
    assert refresh_calls(zalo) == 1

    status = await keeper.status(OA)
    assert status is not None and status.needs_reauthorisation
    assert status.problem is not None and "-14014" in status.problem
    assert status.lease_owner is None
    [notice] = await notifications(db)
    assert notice.kind is NotificationKind.REAUTHORISE
    assert notice.district == DISTRICT and notice.participant_id is None
    assert "cần cấp quyền lại" in notice.text
    assert "https://loa.tanphu.vn/oauth/zalo/start" in notice.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "cần cấp quyền lại" in errors[0].getMessage()
    assert "https://loa.tanphu.vn/oauth/zalo/start" in errors[0].getMessage()
    assert access not in caplog.text and refresh not in caplog.text
    assert zalo.app_secret not in caplog.text

    # never again with the same refresh token, and only one notice
    with pytest.raises(ZaloNotAuthorised, match="cần cấp quyền lại"):
        await keeper.access_token(OA)
    await keeper.invalidated(OA, access)
    assert await keeper.proactive_refresh() == {OA: RefreshOutcome.NOT_AUTHORISED}
    assert refresh_calls(zalo) == 1
    assert len(await notifications(db)) == 1

    # an OA admin authorises again: the OAuth callback stores the first pair
    code = zalo.issue_code(OA, code_verifier="v" * 43)
    pair = await exchange_code(
        http, zalo.oauth_url, zalo.app_id, zalo.app_secret, code, code_verifier="v" * 43
    )
    await keeper.store_initial(OA, pair)
    assert await keeper.access_token(OA) == pair.access_token
    status = await keeper.status(OA)
    assert status is not None and not status.needs_reauthorisation and status.problem is None
    [notice] = await notifications(db)
    assert notice.handled_at is not None


async def test_an_oa_never_authorised_is_not_authorised(
    make_keeper: KeeperFactory, zalo: FakeZaloApi
) -> None:
    keeper = make_keeper()
    with pytest.raises(ZaloNotAuthorised, match="/oauth/zalo/start"):
        await keeper.access_token(OA)
    assert await keeper.status(OA) is None
    assert refresh_calls(zalo) == 0


async def test_a_passing_failure_keeps_a_living_token_and_an_expired_one_retries_later(
    make_keeper: KeeperFactory, zalo: FakeZaloApi
) -> None:
    keeper = make_keeper()
    old = await grant(keeper, zalo, 20 * 60)
    zalo.answer_next(503, b"busy", path=TOKEN_PATH)
    assert await keeper.access_token(OA) == old  # still valid for 20 minutes
    assert await keeper.access_token(OA) == old  # and not asked again straight away
    assert refresh_calls(zalo) == 1
    status = await keeper.status(OA)
    assert status is not None and not status.needs_reauthorisation and status.generation == 1
    # 503 spent nothing: a keeper that does not pause refreshes with the same refresh token
    eager = make_keeper(retry_pause=timedelta(0))
    assert await eager.access_token(OA) == newest_access(zalo) != old
    assert refresh_calls(zalo) == 2

    expired = await grant(keeper, zalo, -60, oa="expired")
    zalo.answer_next(503, b"busy", path=TOKEN_PATH)
    with pytest.raises(RetryLater):
        await keeper.access_token("expired")
    assert await eager.access_token("expired") == newest_access(zalo, "expired") != expired


async def test_two_keepers_at_once_refresh_once_and_share_the_pair(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, database_url: str
) -> None:
    """Two keepers on two engines (as two processes), both needing the refresh together."""
    other_db = await open_database(database_url, migrate=False)
    try:
        keepers = [make_keeper(), make_keeper(other_db)]
        old = await grant(keepers[0], zalo, 10 * 60)
        zalo.delay_next(0.4, path=TOKEN_PATH)  # the loser arrives while the winner waits
        started = time.monotonic()
        tokens = await asyncio.gather(*(k.access_token(OA) for k in keepers))
        assert time.monotonic() - started >= 0.35  # nobody went ahead with the old token
        assert tokens[0] == tokens[1] == newest_access(zalo) != old
        assert refresh_calls(zalo) == 1
    finally:
        await other_db.close()


async def test_the_pair_is_read_again_after_taking_the_lease(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, database_url: str
) -> None:
    """Between a keeper's read ("due") and its lease, another process refreshes: the keeper
    must use that pair, not spend the old refresh token."""
    other_db = await open_database(database_url, migrate=False)
    try:
        late, other = make_keeper(), make_keeper(other_db)
        await grant(late, zalo, 10 * 60)
        take_lease = late._take_lease

        async def after_someone_else(oa_id: str, owner: str) -> bool:
            await other.access_token(oa_id)
            return await take_lease(oa_id, owner)

        late._take_lease = after_someone_else  # type: ignore[method-assign]
        assert await late.access_token(OA) == newest_access(zalo)
        assert refresh_calls(zalo) == 1
        status = await late.status(OA)
        assert status is not None and not status.needs_reauthorisation
    finally:
        await other_db.close()


async def test_many_tasks_of_one_keeper_refresh_once(
    make_keeper: KeeperFactory, zalo: FakeZaloApi
) -> None:
    keeper = make_keeper()
    await grant(keeper, zalo, 10 * 60)
    zalo.delay_next(0.2, path=TOKEN_PATH)
    tokens = await asyncio.gather(*(keeper.access_token(OA) for _ in range(10)))
    assert set(tokens) == {newest_access(zalo)}
    assert refresh_calls(zalo) == 1


async def test_no_database_transaction_is_open_while_zalo_is_called(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, database_url: str
) -> None:
    keeper = make_keeper()
    await grant(keeper, zalo, 10 * 60)
    zalo.delay_next(0.5, path=TOKEN_PATH)
    task = asyncio.create_task(keeper.access_token(OA))
    await received_refresh(zalo)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        other = sqlite3.connect(str(url.database), timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if a writer were open
            owner, until = other.execute(
                "SELECT lease_owner, lease_until FROM zalo_tokens WHERE oa_id = ?", (OA,)
            ).fetchone()
            other.execute("ROLLBACK")
        finally:
            other.close()
    else:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                # NOWAIT fails at once if any transaction held the row
                owner, until = (
                    await connection.execute(
                        text(
                            "SELECT lease_owner, lease_until FROM zalo_tokens "
                            "WHERE oa_id = :oa FOR UPDATE NOWAIT"
                        ),
                        {"oa": OA},
                    )
                ).one()
                idle = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND state LIKE 'idle in transaction%' "
                        "AND pid <> pg_backend_pid()"
                    )
                )
                assert idle == 0
        finally:
            await engine.dispose()
    assert owner and until  # the lease row is what keeps others out
    assert await task == newest_access(zalo)


async def test_a_cancelled_caller_does_not_lose_the_rotated_pair(
    make_keeper: KeeperFactory, zalo: FakeZaloApi
) -> None:
    keeper = make_keeper()
    old = await grant(keeper, zalo, 10 * 60)
    zalo.delay_next(0.3, path=TOKEN_PATH)
    task = asyncio.create_task(keeper.access_token(OA))
    await received_refresh(zalo)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await keeper.close()  # the shielded refresh finishes and saves
    status = await keeper.status(OA)
    assert status is not None and status.generation == 2 and status.lease_owner is None
    assert await keeper.access_token(OA) == newest_access(zalo) != old
    assert refresh_calls(zalo) == 1


async def test_an_expired_lease_is_taken_over_and_a_live_one_is_waited_for_within_bounds(
    make_keeper: KeeperFactory, zalo: FakeZaloApi, db: Database
) -> None:
    keeper = make_keeper(wait=timedelta(seconds=3))
    old = await grant(keeper, zalo, 10 * 60)

    async def hold(seconds: float) -> None:  # a holder that will never release
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(ZaloTokenPair)
                .where(ZaloTokenPair.oa_id == OA)
                .values(
                    lease_owner="dead-process",
                    lease_until=datetime.now(UTC) + timedelta(seconds=seconds),
                )
            )

    await hold(0.5)
    started = time.monotonic()
    token = await keeper.access_token(OA)
    assert 0.4 <= time.monotonic() - started < 2.5
    assert token == newest_access(zalo) != old
    assert refresh_calls(zalo) == 1

    # a lease that outlives the wait: a living token is used, an expired one is retried later
    impatient = make_keeper(wait=timedelta(seconds=0.3))
    living = await grant(keeper, zalo, 10 * 60, oa=OA)
    await hold(60)
    assert await impatient.access_token(OA) == living
    await grant(keeper, zalo, -1, oa=OA)
    await hold(60)
    with pytest.raises(RetryLater, match="đang gia hạn"):
        await impatient.access_token(OA)
    assert refresh_calls(zalo) == 1


def test_the_margin_must_stay_well_inside_the_token_lifetime(
    db: Database, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(ValueError, match="refresh_margin"):
        ZaloTokenKeeper(
            db, http, "http://127.0.0.1:1", "1", "s", refresh_margin=timedelta(hours=20)
        )
