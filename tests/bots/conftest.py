"""Fixtures for the application tests: real stores, real records, real engine.

`echo_flows` is a tiny deployment whose one flow answers every message with "Đã nhận: <text>"
and asks again, so a reply says exactly which inbound produced it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, Capabilities
from bots.records import FileStore, Records, open_database
from bots.runtime import Flows, SqlRecords, load_flows
from bots.settings import Settings, from_env
from bots.state import Store, open_store
from flows.vocab import Channel, ConversationKey, Inbound, InboundKind, Outbound

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "flows.yaml"

ECHO_YAML = """\
organisations:
  thu:
    name: Đơn vị thử
    channels: {webchat: {}}
    menu: nhac_lai
flows:
  nhac_lai:
    title: Nhắc lại
    steps:
      - id: hoi
        ask: Bạn gửi gì?
        expect: text
        save: x
      - say: "Đã nhận: {x}"
        goto: hoi
"""


@pytest.fixture
def echo_flows(tmp_path: Path) -> Flows:
    path = tmp_path / "echo" / "flows.yaml"
    path.parent.mkdir()
    path.write_text(ECHO_YAML, encoding="utf-8")
    return load_flows(path)


class Recorder(Adapter):
    """A push channel that keeps what it was asked to send (the platform seam of a test)."""

    channel = Channel.TELEGRAM
    capabilities = Capabilities(max_text=4096, max_buttons=10, max_button_title=64)

    def __init__(self) -> None:
        self.sent: list[tuple[ConversationKey, Outbound]] = []

    def verify(self, body: bytes, headers: Any) -> bool:
        return True

    def parse(self, body: bytes) -> list[Inbound]:
        return []

    async def send(self, key: ConversationKey, message: Outbound) -> None:
        self.sent.append((key, message))

    def texts(self, user: str | None = None) -> list[str]:
        return [m.text for k, m in self.sent if user is None or k.user_id == user]


_ids = itertools.count(1)


def inbound(
    user: str,
    text: str = "",
    *,
    kind: InboundKind = InboundKind.TEXT,
    message_id: str | None = None,
    district: str = "thu",
    channel: Channel = Channel.TELEGRAM,
    ref: str | None = None,
) -> Inbound:
    return Inbound(
        district=district,
        channel=channel,
        user_id=user,
        kind=kind,
        message_id=message_id or f"m{next(_ids)}",
        timestamp=datetime.now(UTC),
        text=text,
        ref=ref,
    )


StoreFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """`await make_store(lease=…)`: a fresh store of the parametrised kind (closed after)."""
    kind: str = request.param
    opened: list[Store] = []
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    prefix = request.getfixturevalue("redis_prefix") if kind == "redis" else "loa:"
    count = itertools.count()

    async def make(lease: float = 30.0) -> Store:
        store = await open_store(
            memory=kind == "memory",
            redis_url=redis_url,
            data_dir=tmp_path / f"state{next(count)}",
            lock_ttl=lease,
            prefix=prefix,
        )
        opened.append(store)
        return store

    make.kind = kind  # type: ignore[attr-defined]
    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def records(tmp_path: Path, echo_flows: Flows) -> AsyncIterator[SqlRecords]:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'records.sqlite3'}")
    files = FileStore(tmp_path / "files")
    yield SqlRecords(Records(db.sessions, files, reads=db.reads), lambda: echo_flows.compiled)
    await db.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for the shipped flows.yaml on a fresh data dir (SQLite; never Redis)."""
    return from_env({"LOA_CONFIG": str(FLOWS), "LOA_DATA_DIR": str(tmp_path / "var")})
