"""The conversation store: durable inbox, lock, session with compare-and-set, outbox.

One small protocol, three implementations (memory for benchmarks and unit tests, embedded
SQLite, Redis). One contract suite in tests/ runs against all of them.

The pipeline's use of it, per conversation:

    accept(key, message_id, payload)      webhook side: durable, de-duplicated; then acknowledge
    claim(key, owner)                     worker: take the lock, read session + pending inbox
    ... engine, records ...
    commit(claim, session, upto, outbox)  compare-and-set the session, drop handled inbox items,
                                          append outbox items; returns the next claim if more
                                          arrived meanwhile (lock kept), else releases the lock
    outbox_read / outbox_ack              the sender delivers outbox items in order

The lock is a lease: if a worker stalls past it, another may claim; compare-and-set on the
session's version then refuses the stale worker's commit (`StaleClaim`), so two writers can
never both succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from flows.vocab import ConversationKey


class StoreError(Exception):
    """Base of the store's exception tree."""


class StaleClaim(StoreError):
    """The claim's lease expired and another worker changed the conversation: nothing written."""


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int  # arrival order within the conversation
    message_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    key: ConversationKey
    owner: str  # the lock token
    session: bytes | None  # None: no session yet (or it expired)
    version: int  # compare-and-set version of `session` (0 when there is none)
    items: tuple[Pending, ...]  # pending inbox items in arrival order


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Deferral:
    """Why the sender left an outbox's first item (and so everything after it) for later.

    Written by `outbox_defer`, cleared when the item is acknowledged. The store keeps it
    durably and does not interpret `reason` (the sender's vocabulary: bots/delivery.py)."""

    seq: int  # the outbox item it concerns: the first one not yet delivered
    attempts: int  # failed tries of that item so far
    not_before: float  # Unix time (s) before which it is not tried again; inf: not by time
    reason: str
    error: str = ""  # what the platform said last (for operators; no personal data)


@dataclass(frozen=True, slots=True)
class Sending:
    """What `outbox_claim` found: the undelivered items in order, and the first one's
    deferral if it has one (None also when a stale deferral names an acknowledged item)."""

    items: tuple[OutboxItem, ...]
    deferral: Deferral | None


class ConversationStore(Protocol):
    async def accept(self, key: ConversationKey, message_id: str, payload: bytes) -> bool:
        """Store an inbound durably unless its message id was seen; False for a duplicate."""
        ...

    async def claim(self, key: ConversationKey, owner: str) -> Claim | None:
        """Lock the conversation and read it; None if another worker holds it or nothing is
        pending."""
        ...

    async def commit(
        self,
        claim: Claim,
        session: bytes | None,
        upto_seq: int,
        outbox: Sequence[bytes],
    ) -> Claim | None:
        """Atomically: check the claim still owns an unchanged session (else `StaleClaim`),
        store `session` (None deletes it), drop inbox items up to `upto_seq`, append `outbox`.
        If more items are pending, keep the lock and return the next claim; else release."""
        ...

    async def release(self, claim: Claim) -> None:
        """Give the lock back without writing (error paths)."""
        ...

    async def outbox_read(self, key: ConversationKey, after_seq: int = 0) -> list[OutboxItem]:
        ...

    async def outbox_ack(self, key: ConversationKey, upto_seq: int) -> None:
        ...

    async def pending_keys(self) -> list[ConversationKey]:
        """Conversations with inbox items waiting (recovery after a crash or restart)."""
        ...

    async def close(self) -> None:
        ...
