"""The in-memory conversation store: dicts and deques in this process, nothing durable.

Same semantics as the Redis and SQLite stores (one contract suite checks all three); used by
unit tests, `loa chat` and the benchmark's in-memory configuration. Every method runs without
awaiting, so each is atomic on the event loop without any lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from time import monotonic

from bots.state import (
    DEDUPE_WINDOW,
    DEFAULT_LEASE,
    DEFAULT_SESSION_TTL,
    DUPLICATE,
    Duplicate,
)
from bots.state.protocol import Claim, Deferral, OutboxItem, Pending, Sending, StaleClaim
from flows.vocab import ConversationKey

_SWEEP_EVERY = 10_000  # accepts between two sweeps of idle conversations


class _Conversation:
    __slots__ = (
        "deferral",
        "expires",
        "in_seq",
        "inbox",
        "lease_until",
        "out_seq",
        "outbox",
        "owner",
        "seen",
        "seen_order",
        "sender",
        "sender_until",
        "session",
        "version",
    )

    def __init__(self) -> None:
        self.session: bytes | None = None
        self.version = 0
        self.expires = 0.0
        self.in_seq = 0
        self.out_seq = 0
        self.inbox: deque[Pending] = deque()
        self.outbox: deque[OutboxItem] = deque()
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()
        self.owner: str | None = None
        self.lease_until = 0.0
        self.sender = ""  # the outbox sender's lease (never the conversation lock)
        self.sender_until = 0.0
        self.deferral: Deferral | None = None

    def forget(self) -> None:
        """Idle past the TTL: the session and the de-dup window go; the version keeps counting
        so an old claim can never match a newer session (no ABA)."""
        self.session = None
        self.seen.clear()
        self.seen_order.clear()


class MemoryStore:
    """`bots.state.Store` in a dict. `lease` and `session_ttl` are in seconds."""

    def __init__(
        self,
        *,
        lease: float = DEFAULT_LEASE,
        session_ttl: float = DEFAULT_SESSION_TTL,
        dedupe_window: int = DEDUPE_WINDOW,
    ) -> None:
        self.lease = lease
        self.session_ttl = session_ttl
        self.dedupe_window = dedupe_window
        self._conversations: dict[ConversationKey, _Conversation] = {}
        self._accepts = 0

    # -- internals -------------------------------------------------------------------------

    def _get(self, key: ConversationKey, now: float) -> _Conversation | None:
        conv = self._conversations.get(key)
        if conv is not None and conv.expires <= now:
            conv.forget()
        return conv

    def _accept(
        self, key: ConversationKey, message_id: str, payload: bytes, now: float
    ) -> _Conversation | None:
        conv = self._get(key, now)
        if conv is None:
            conv = self._conversations[key] = _Conversation()
        elif message_id in conv.seen:
            return None
        conv.seen.add(message_id)
        conv.seen_order.append(message_id)
        if len(conv.seen_order) > self.dedupe_window:
            conv.seen.discard(conv.seen_order.popleft())
        conv.in_seq += 1
        conv.inbox.append(Pending(conv.in_seq, message_id, payload))
        conv.expires = now + self.session_ttl
        self._accepts += 1
        if self._accepts % _SWEEP_EVERY == 0:
            self._sweep(now)
        return conv

    def _take(
        self, key: ConversationKey, conv: _Conversation, owner: str, now: float
    ) -> Claim | None:
        if conv.owner is not None and conv.lease_until > now:
            return None  # a live lease is exclusive, even against the same owner token
        if not conv.inbox:
            return None
        conv.owner = owner
        conv.lease_until = now + self.lease
        return Claim(key, owner, conv.session, conv.version, tuple(conv.inbox))

    def _sweep(self, now: float) -> None:
        idle = [
            key
            for key, conv in self._conversations.items()
            if conv.expires <= now and not conv.inbox and not conv.outbox
        ]
        for key in idle:
            del self._conversations[key]

    # -- the protocol ----------------------------------------------------------------------

    async def accept(self, key: ConversationKey, message_id: str, payload: bytes) -> bool:
        return self._accept(key, message_id, payload, monotonic()) is not None

    async def accept_and_claim(
        self, key: ConversationKey, message_id: str, payload: bytes, owner: str
    ) -> Claim | Duplicate | None:
        now = monotonic()
        conv = self._accept(key, message_id, payload, now)
        if conv is None:
            return DUPLICATE
        return self._take(key, conv, owner, now)

    async def claim(self, key: ConversationKey, owner: str) -> Claim | None:
        now = monotonic()
        conv = self._get(key, now)
        if conv is None:
            return None
        return self._take(key, conv, owner, now)

    async def commit(
        self, claim: Claim, session: bytes | None, upto_seq: int, outbox: Sequence[bytes]
    ) -> Claim | None:
        return (await self.commit_with_outbox(claim, session, upto_seq, outbox))[0]

    async def commit_with_outbox(
        self, claim: Claim, session: bytes | None, upto_seq: int, outbox: Sequence[bytes]
    ) -> tuple[Claim | None, list[OutboxItem]]:
        now = monotonic()
        conv = self._get(claim.key, now)
        if conv is None or conv.owner != claim.owner or conv.version != claim.version:
            raise StaleClaim(str(claim.key))
        conv.session = session
        conv.version += 1
        conv.expires = now + self.session_ttl
        inbox = conv.inbox
        while inbox and inbox[0].seq <= upto_seq:
            inbox.popleft()
        added: list[OutboxItem] = []
        for payload in outbox:
            conv.out_seq += 1
            added.append(OutboxItem(conv.out_seq, payload))
        conv.outbox.extend(added)
        if inbox:
            conv.lease_until = now + self.lease
            return Claim(claim.key, claim.owner, session, conv.version, tuple(inbox)), added
        conv.owner = None
        return None, added

    async def release(self, claim: Claim) -> None:
        conv = self._conversations.get(claim.key)
        if conv is not None and conv.owner == claim.owner:
            conv.owner = None

    async def outbox_read(self, key: ConversationKey, after_seq: int = 0) -> list[OutboxItem]:
        conv = self._conversations.get(key)
        if conv is None:
            return []
        return [item for item in conv.outbox if item.seq > after_seq]

    async def outbox_ack(self, key: ConversationKey, upto_seq: int) -> None:
        conv = self._conversations.get(key)
        if conv is None:
            return
        outbox = conv.outbox
        while outbox and outbox[0].seq <= upto_seq:
            outbox.popleft()

    # -- the sender's additions ------------------------------------------------------------

    async def outbox_claim(self, key: ConversationKey, owner: str, lease: float) -> Sending | None:
        conv = self._conversations.get(key)
        if conv is None:
            return Sending((), None)
        if lease > 0:
            now = monotonic()
            if conv.sender and conv.sender != owner and conv.sender_until > now:
                return None
            conv.sender, conv.sender_until = owner, now + lease
        items = tuple(conv.outbox)
        deferral = conv.deferral
        if deferral is not None and (not items or deferral.seq != items[0].seq):
            deferral = None  # stale: its item was acknowledged (or is not first any more)
        return Sending(items, deferral)

    async def outbox_done(
        self, key: ConversationKey, owner: str, upto_seq: int, lease: float = 0.0
    ) -> None:
        conv = self._conversations.get(key)
        if conv is None:
            return
        if upto_seq:
            await self.outbox_ack(key, upto_seq)
            if conv.deferral is not None and conv.deferral.seq <= upto_seq:
                conv.deferral = None
        if owner and conv.sender == owner:
            if lease > 0:
                conv.sender_until = monotonic() + lease
            else:
                conv.sender, conv.sender_until = "", 0.0

    async def outbox_defer(self, key: ConversationKey, owner: str, deferral: Deferral) -> None:
        conv = self._conversations.get(key)
        if conv is None:
            return
        if any(item.seq == deferral.seq for item in conv.outbox):
            conv.deferral = deferral
        if owner and conv.sender == owner:
            conv.sender, conv.sender_until = "", 0.0

    async def outbox_due(self, now: float) -> list[ConversationKey]:
        due = []
        for key, conv in self._conversations.items():
            if not conv.outbox:
                continue
            deferral = conv.deferral
            if (
                deferral is None
                or deferral.seq != conv.outbox[0].seq  # stale: its item is gone
                or deferral.not_before <= now
            ):
                due.append(key)
        return due

    async def pending_keys(self) -> list[ConversationKey]:
        return [key for key, conv in self._conversations.items() if conv.inbox]

    async def outbox_keys(self) -> list[ConversationKey]:
        return [key for key, conv in self._conversations.items() if conv.outbox]

    async def close(self) -> None:
        self._conversations.clear()
