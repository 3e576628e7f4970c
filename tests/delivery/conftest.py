"""Delivery against the fake platform servers: real stores, real records, real engine.

`rig` builds a pipeline for one conversation channel with the real adapter pointed at a fake
platform (Telegram Bot API, Graph API for Messenger), the echo flow of tests/bots (every text
is answered "Đã nhận: <text>" then the question again), and the records database on SQLite.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.messenger import MessengerAdapter
from adapters.telegram import TelegramAdapter
from adapters.telegram_transport import HttpTransport
from bots.delivery import DeliveryPolicy
from bots.pipeline import Pipeline, encode_inbound, encode_outbound
from bots.ratelimit import limiter_for
from bots.records import FileStore, Records, open_database
from bots.runtime import Flows, SqlRecords, load_flows
from bots.state import Store, open_store
from flows import session as codec
from flows.engine import Engine
from flows.vocab import Channel, ConversationKey, Inbound, InboundKind, Outbound
from tests.bots.conftest import ECHO_YAML
from tests.fakes.graph_api import FakeGraphApi
from tests.fakes.telegram_api import FakeTelegramApi

PAGE_ID = "1029384756"
PAGE_TOKEN = "fake-page-token"
APP_SECRET = "fake-app-secret"

_ids = itertools.count(1)


def message(
    user: str,
    text: str = "",
    *,
    channel: Channel,
    kind: InboundKind = InboundKind.TEXT,
    at: datetime | None = None,
) -> Inbound:
    return Inbound(
        district="thu",
        channel=channel,
        user_id=user,
        kind=kind,
        message_id=f"d{next(_ids)}",
        timestamp=at or datetime.now(UTC),
        text=text,
    )


async def queue_reply(store: Store, key: ConversationKey, *texts: str | Outbound) -> list[int]:
    """Put replies in a conversation's outbox as an organiser's action would (a SYSTEM inbound
    handled without the engine); returns their outbox seqs."""
    system = Inbound(
        "thu", key.channel, key.user_id, InboundKind.SYSTEM, f"sys{next(_ids)}",
        datetime.now(UTC), payload="say",
    )
    assert await store.accept(key, system.message_id, encode_inbound(system))
    claim = await store.claim(key, f"organiser-{next(_ids)}")
    assert claim is not None
    payloads = [
        encode_outbound(text if isinstance(text, Outbound) else Outbound(text)) for text in texts
    ]
    nxt, added = await store.commit_with_outbox(claim, claim.session, claim.items[-1].seq, payloads)
    assert nxt is None
    return [item.seq for item in added]


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@dataclass
class TimedTransport:
    """A Telegram transport that notes when each call was answered and how."""

    inner: HttpTransport
    log: list[tuple[float, str, bool, str]] = field(default_factory=list)

    async def __call__(self, method: str, body: bytes) -> Any:
        reply = await self.inner(method, body)
        text = str(orjson.loads(body).get("text", ""))
        self.log.append((time.monotonic(), method, bool(reply.get("ok")), text))
        return reply


@dataclass
class Rig:
    store: Store
    records: SqlRecords
    flows: Flows
    pipelines: list[Pipeline] = field(default_factory=list)

    def pipeline(self, adapter: Any, channel: Channel, **kw: Any) -> Pipeline:
        kw.setdefault("delivery", DeliveryPolicy(backoff=0.2, max_wait=0.5))
        store = kw.pop("store", self.store)
        kw.setdefault("limiter", limiter_for(store))  # the runtime's real rate limits
        pipeline = Pipeline(
            store,
            Engine(self.flows.compiled),
            codec,
            records=kw.pop("records", self.records),
            adapters={channel: adapter},
            **kw,
        )
        self.pipelines.append(pipeline)
        return pipeline


@pytest.fixture
def echo_flows(tmp_path: Path) -> Flows:
    path = tmp_path / "echo" / "flows.yaml"
    path.parent.mkdir()
    path.write_text(ECHO_YAML, encoding="utf-8")
    return load_flows(path)


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Open = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_state(
    request: pytest.FixtureRequest, tmp_path: Path, store_kind: str
) -> AsyncIterator[Open]:
    """`await open_state()`: a store of the parametrised kind; two calls share one place
    (one SQLite file, one Redis prefix), like two processes."""
    url = request.getfixturevalue("redis_url") if store_kind == "redis" else None
    prefix = request.getfixturevalue("redis_prefix") if store_kind == "redis" else "loa:"
    opened: list[Store] = []

    async def make() -> Store:
        store = await open_store(redis_url=url, data_dir=tmp_path / "state", prefix=prefix)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def rig(tmp_path: Path, echo_flows: Flows, open_state: Open) -> AsyncIterator[Rig]:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'records.sqlite3'}")
    records = SqlRecords(
        Records(db.sessions, FileStore(tmp_path / "files"), reads=db.reads),
        lambda: echo_flows.compiled,
    )
    made = Rig(await open_state(), records, echo_flows)
    made.db = db  # type: ignore[attr-defined]
    yield made
    for pipeline in made.pipelines:
        pipeline.cancel_timers()
        await pipeline.idle()
    await db.close()


@pytest.fixture
async def telegram() -> AsyncIterator[tuple[FakeTelegramApi, TelegramAdapter, TimedTransport]]:
    async with FakeTelegramApi() as tg:
        transport = TimedTransport(HttpTransport(tg.token, api_base=tg.url, timeout=5))
        yield tg, TelegramAdapter("thu", transport=transport), transport
        await transport.inner.close()


@pytest.fixture
async def messenger() -> AsyncIterator[tuple[FakeGraphApi, MessengerAdapter]]:
    async with (
        FakeGraphApi(tokens={PAGE_TOKEN}, app_secret=APP_SECRET) as graph,
        aiohttp.ClientSession() as session,
    ):
        adapter = MessengerAdapter(
            app_secret=APP_SECRET,
            verify_token="verify",
            pages={PAGE_ID: ("thu", PAGE_TOKEN)},
            session=session,
            graph_api=graph.url,
            public_url="http://127.0.0.1:1",
            timeout=0.5,
        )
        yield graph, adapter
