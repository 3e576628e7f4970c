"""Conversation stores: one protocol (`protocol.ConversationStore`), three implementations.

`open_store(...)` picks one from settings-like arguments: Redis when a URL is given, else the
embedded SQLite file `<data_dir>/state.sqlite3`; the in-memory store only when asked for.

Every implementation also offers additions to the protocol (see `Store`):
`accept_and_claim` (the pipeline's one-round-trip fast path), `commit_with_outbox` (a commit
that also returns the outbox items it appended, so they can be sent without reading them back)
and `outbox_keys` (conversations with undelivered outbox items, for recovery); and for the
sender (bots/delivery.py, docs/delivery.md) a sender lease per conversation and a durable
deferral of the outbox's first item: `outbox_claim`, `outbox_done`, `outbox_defer`,
`outbox_due`. docs/state.md describes the semantics and the Redis key layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal, Protocol
from urllib.parse import quote, unquote

from bots.state.protocol import (
    Claim,
    ConversationStore,
    Deferral,
    OutboxItem,
    Pending,
    Sending,
    StaleClaim,
    StoreError,
)
from flows.vocab import Channel, ConversationKey

DUPLICATE: Final = "duplicate"  # accept_and_claim's answer for a message id already seen
Duplicate = Literal["duplicate"]

DEFAULT_LEASE: Final = 30.0  # seconds a claim's lock lasts without a commit
DEFAULT_SESSION_TTL: Final = 30 * 24 * 3600.0  # seconds an idle conversation is kept
DEDUPE_WINDOW: Final = 64  # message ids remembered per conversation


class Store(ConversationStore, Protocol):
    """What every Loa store offers: the protocol plus the pipeline's fast paths."""

    async def accept_and_claim(
        self, key: ConversationKey, message_id: str, payload: bytes, owner: str
    ) -> Claim | Duplicate | None:
        """`accept`, then `claim` if nobody else holds the lock, in one atomic step.

        Returns `DUPLICATE` for a message id already seen (nothing stored), a `Claim` when this
        owner now holds the lock, or None when the message was stored but another live owner
        holds the lock (that owner's `commit` will hand it the new item)."""
        ...

    async def commit_with_outbox(
        self,
        claim: Claim,
        session: bytes | None,
        upto_seq: int,
        outbox: Sequence[bytes],
    ) -> tuple[Claim | None, list[OutboxItem]]:
        """`commit`, also returning the outbox items it appended with their sequence numbers."""
        ...

    async def outbox_keys(self) -> list[ConversationKey]:
        """Conversations whose outbox holds items not yet acknowledged."""
        ...

    # -- the sender's additions (bots/delivery.py) ------------------------------------------

    async def outbox_claim(self, key: ConversationKey, owner: str, lease: float) -> Sending | None:
        """Take the conversation's *sender* lease for `lease` seconds (not the conversation
        lock: the sender never holds that) and read the undelivered items with the first one's
        deferral. None when another owner holds a live sender lease; the same owner renews it.
        `lease <= 0` reads without taking or checking any lease (a process that is the only
        sender of its store)."""
        ...

    async def outbox_done(
        self, key: ConversationKey, owner: str, upto_seq: int, lease: float = 0.0
    ) -> None:
        """Acknowledge items up to `upto_seq` (0: none) and drop a deferral of one of them;
        then, if `owner` holds the sender lease, renew it for `lease` seconds, or release it
        when `lease <= 0`."""
        ...

    async def outbox_defer(self, key: ConversationKey, owner: str, deferral: Deferral) -> None:
        """Record `deferral` (replacing any other) if the outbox still holds `deferral.seq`,
        then release `owner`'s sender lease."""
        ...

    async def outbox_due(self, now: float) -> list[ConversationKey]:
        """Conversations with undelivered items that are not deferred past `now` (Unix time):
        no deferral, a stale one, or one whose `not_before <= now` (recovery sweeps)."""
        ...


def conversation_id(key: ConversationKey) -> str:
    """A stable text id of a conversation: `district:channel:user`, each part %-escaped so
    the id splits back unambiguously and holds no Redis glob or hash-tag characters."""
    return f"{quote(key.district, safe='')}:{key.channel.value}:{quote(key.user_id, safe='')}"


def parse_conversation_id(text: str) -> ConversationKey:
    district, channel, user_id = text.split(":", 2)
    return ConversationKey(unquote(district), Channel(channel), unquote(user_id))


async def open_store(
    *,
    redis_url: str | None = None,
    data_dir: str | Path | None = None,
    memory: bool = False,
    lock_ttl: float = DEFAULT_LEASE,
    session_ttl: float = DEFAULT_SESSION_TTL,
    prefix: str = "loa:",
) -> Store:
    """The store a deployment uses: in memory if `memory`, else Redis if `redis_url`, else
    SQLite at `<data_dir>/state.sqlite3` (`data_dir` defaults to `./var`).

    Takes the names of `bots.settings.Settings` fields, so `open_store(redis_url=s.redis_url,
    data_dir=s.data_dir, lock_ttl=s.lock_ttl, session_ttl=s.session_ttl)` is the usual call.
    """
    if memory:
        from bots.state.memory import MemoryStore

        return MemoryStore(lease=lock_ttl, session_ttl=session_ttl)
    if redis_url:
        from bots.state.redis import RedisStore

        return await RedisStore.connect(
            redis_url, prefix=prefix, lease=lock_ttl, session_ttl=session_ttl
        )
    from bots.state.sqlite import SqliteStore

    folder = Path(data_dir) if data_dir is not None else Path("./var")
    return await SqliteStore.open(folder / "state.sqlite3", lease=lock_ttl, session_ttl=session_ttl)


__all__ = [
    "DEDUPE_WINDOW",
    "DEFAULT_LEASE",
    "DEFAULT_SESSION_TTL",
    "DUPLICATE",
    "Claim",
    "ConversationStore",
    "Deferral",
    "Duplicate",
    "OutboxItem",
    "Pending",
    "Sending",
    "StaleClaim",
    "Store",
    "StoreError",
    "conversation_id",
    "open_store",
    "parse_conversation_id",
]
