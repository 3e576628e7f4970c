"""The pipeline: inbox → worker (media, engine, records, compare-and-set) → outbox → delivery.

    ingest(inbound)   encode once (orjson) → store.accept_and_claim (durable, de-duplicated)
                      → return, so the caller acknowledges the platform → schedule the
                      conversation's worker.
    worker            claim → for each pending item in arrival order: media capture (images and
                      files) → engine.handle → records (idempotent by inbound id) →
                      store.commit_with_outbox (compare-and-set the session, drop the handled
                      items, append the replies) → loop while the commit hands back a next claim.
    delivery          adapter.send → outbox_ack, in order per recipient, after the lock is
                      released (the lock is never held while waiting on a platform).

Everything a conversation needs lives in the store; the only process memory is `_running`, a map
of conversations whose worker runs in this process right now (a scheduling optimisation: it
keeps one worker and one sender per conversation per process, so replies go out in order).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from adapters.base import (
    Adapter,
    AdapterError,
    AuthExpired,
    OutsideWindow,
    RetryLater,
)
from bots.state import DUPLICATE
from bots.state import Duplicate as _Duplicate
from bots.state.protocol import Claim, ConversationStore, OutboxItem, StaleClaim
from flows.events import RecordEvent
from flows.vocab import (
    Attachment,
    Channel,
    Choice,
    ConversationKey,
    Inbound,
    InboundKind,
    NoticeKind,
    Outbound,
)

log = logging.getLogger("loa.pipeline")

SORRY = (
    "Xin lỗi, hệ thống vừa gặp trục trặc khi xử lý tin nhắn của bạn. Thông tin bạn đã gửi vẫn "
    "được giữ nguyên; bạn thử gửi lại sau ít phút nhé."
)

# -- compact codecs ------------------------------------------------------------------------------
# An inbox item is a JSON array without the conversation key (the store already keys it):
#   [kind, message_id, timestamp_us, text, payload, ref, attachments, data]
# trailing empty fields dropped. An outbox item: [text, choices, image, file, notice].

_KINDS = {kind.value: kind for kind in InboundKind}
_NOTICES = {notice.value: notice for notice in NoticeKind}
_REPLY = NoticeKind.REPLY.value


def encode_inbound(inbound: Inbound) -> bytes:
    row: list[Any] = [
        inbound.kind.value,
        inbound.message_id,
        int(inbound.timestamp.timestamp() * 1_000_000),
        inbound.text,
        inbound.payload,
        inbound.ref,
        [_attachment_row(a) for a in inbound.attachments],
        inbound.data,
    ]
    while len(row) > 3 and not row[-1]:
        row.pop()
    return orjson.dumps(row)


_ATTACHMENT_FIELDS = tuple(f.name for f in fields(Attachment))  # positional, in declared order


def _attachment_row(attachment: Attachment) -> list[Any]:
    # Fields are only ever appended to Attachment, so older rows still decode positionally.
    row = [getattr(attachment, name) for name in _ATTACHMENT_FIELDS]
    while row and row[-1] is None:
        row.pop()
    return row


def decode_inbound(payload: bytes, key: ConversationKey) -> Inbound:
    row = orjson.loads(payload)
    n = len(row)
    return Inbound(
        district=key.district,
        channel=key.channel,
        user_id=key.user_id,
        kind=_KINDS[row[0]],
        message_id=row[1],
        timestamp=datetime.fromtimestamp(row[2] / 1_000_000, UTC),
        text=row[3] if n > 3 else "",
        payload=row[4] if n > 4 else None,
        ref=row[5] if n > 5 else None,
        attachments=tuple(Attachment(*a) for a in row[6]) if n > 6 else (),
        data=tuple((k, v) for k, v in row[7]) if n > 7 else (),
    )


def encode_outbound(message: Outbound, image: str | None = None) -> bytes:
    """`image` overrides `message.image` (the media URL the library resolved it to)."""
    row: list[Any] = [
        message.text,
        [[c.title, c.payload] for c in message.choices],
        image if image is not None else message.image,
        message.file,
        message.notice.value,
    ]
    if row[4] == _REPLY:
        row.pop()
        while len(row) > 1 and not row[-1]:
            row.pop()
    return orjson.dumps(row)


def outbound_row(payload: bytes) -> list[Any]:
    """The raw outbox row, for channels that hand it on as JSON (the browser chat)."""
    row: list[Any] = orjson.loads(payload)
    return row


def decode_outbound(payload: bytes) -> Outbound:
    row = orjson.loads(payload)
    n = len(row)
    return Outbound(
        text=row[0],
        choices=tuple(Choice(t, p) for t, p in row[1]) if n > 1 else (),
        image=row[2] if n > 2 else None,
        file=row[3] if n > 3 else None,
        notice=_NOTICES[row[4]] if n > 4 else NoticeKind.REPLY,
    )


# -- what the pipeline drives --------------------------------------------------------------------


class TurnLike(Protocol):
    @property
    def session(self) -> Any: ...
    @property
    def outbound(self) -> Sequence[Outbound]: ...
    @property
    def events(self) -> Sequence[RecordEvent]: ...


class EngineLike(Protocol):
    def handle(self, session: Any, inbound: Inbound, now: datetime) -> TurnLike: ...


class SessionCodec(Protocol):
    def dumps(self, session: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


class Records(Protocol):
    """What must outlive a session (see bots/runtime.py for the SQL implementation)."""

    async def apply(
        self, key: ConversationKey, inbound_id: str, events: Sequence[RecordEvent], now: datetime
    ) -> None: ...

    async def touch(self, key: ConversationKey, at: datetime, ref: str | None) -> None:
        """The person wrote at `at` (messaging windows); `ref`: the deep link they came by."""
        ...

    async def restore(self, key: ConversationKey, now: datetime) -> Any:
        """A fresh session for a person whose session expired (None: nothing known)."""
        ...


Capture = Callable[[Inbound], Awaitable[Inbound]]
"""The media step before the engine (bots.media.MediaCapture.capture): an IMAGE/FILE inbound
comes back with its attachments downloaded, checked and stored. It refuses a message by raising
an exception with a `text` attribute (the Vietnamese reason); any other exception is an outage
(the message stays in the inbox and is retried)."""

_MEDIA = frozenset({InboundKind.IMAGE, InboundKind.FILE})


class PullChannel(Protocol):
    """A channel whose client fetches the outbox itself (the browser chat)."""

    def outbox_changed(self, key: ConversationKey) -> None: ...


@dataclass(slots=True)
class _Run:
    """A conversation whose worker runs in this process now."""

    dirty: bool = False  # more was accepted meanwhile: claim again before stopping
    claim: Claim | None = None  # a claim handed over by a fused accept-and-claim
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    attempts: int = 5  # tries of one message on RetryLater before leaving it for later
    backoff: float = 0.5  # seconds, doubled per try, when the platform gives no retry_after
    max_wait: float = 30.0


class Pipeline:
    """Drives conversations from the store's inbox through the engine to the outbox.

    `exclusive`: only this process delivers this store's outboxes (the embedded SQLite and
    memory stores; default False for Redis, which several processes may share). Then replies a
    commit just appended are sent as they are, without reading the outbox back, unless this
    process knows of older undelivered ones (`_backlog`, refilled from `outbox_keys` by
    `recover`). When shared, the sender reads the outbox first, so it never acknowledges past a
    reply another process left undelivered.
    """

    def __init__(
        self,
        store: ConversationStore,
        engine: EngineLike,
        codec: SessionCodec,
        *,
        records: Records | None = None,
        adapters: Mapping[Channel, Adapter | PullChannel] | None = None,
        media_url: Callable[[str], str | None] | None = None,
        clock: Callable[[], datetime] | None = None,
        delivery: DeliveryPolicy | None = None,
        exclusive: bool | None = None,
        capture: Capture | None = None,
    ) -> None:
        self.store = store
        self.capture = capture
        self.engine = engine  # replaced on reload; a turn uses the engine it started with
        self.codec = codec
        self.records = records
        self.media_url = media_url
        self.clock = clock or _utcnow
        self.delivery = delivery or DeliveryPolicy()
        self.exclusive = (
            exclusive if exclusive is not None else "redis" not in type(store).__module__
        )
        self._push: dict[Channel, Adapter] = {}
        self._pull: dict[Channel, PullChannel] = {}
        for channel, adapter in (adapters or {}).items():
            self.add_adapter(channel, adapter)
        self._running: dict[ConversationKey, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog: set[ConversationKey] = set()  # outboxes known to hold older replies
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}:"
        self._serial = itertools.count()
        self._fused: Callable[..., Awaitable[Any]] | None = getattr(
            store, "accept_and_claim", None
        )
        self._commit: Callable[..., Awaitable[tuple[Claim | None, list[OutboxItem]]]] | None = (
            getattr(store, "commit_with_outbox", None)
        )
        self.processed = 0  # inbound items handled in this process (for /healthz and tests)

    def add_adapter(self, channel: Channel, adapter: Adapter | PullChannel) -> None:
        if hasattr(adapter, "outbox_changed"):
            self._pull[channel] = adapter
        elif isinstance(adapter, Adapter):
            self._push[channel] = adapter

    # -- entry points ----------------------------------------------------------------------------

    async def ingest(self, inbound: Inbound) -> bool:
        """Store the inbound durably and schedule its worker; False for a duplicate.
        When this returns, the caller may acknowledge the platform."""
        key = ConversationKey(inbound.district, inbound.channel, inbound.user_id)
        claim = await self._accept(key, inbound.message_id, encode_inbound(inbound))
        if isinstance(claim, str):  # DUPLICATE
            return False
        self.schedule(key, claim)
        return True

    def schedule(self, key: ConversationKey, claim: Claim | None = None) -> None:
        """Make sure a worker will look at this conversation (in the background)."""
        run = self._running.get(key)
        if run is not None:
            run.dirty = True
            if claim is not None:
                run.claim = claim
            return
        run = self._running[key] = _Run(claim=claim)
        task = asyncio.get_running_loop().create_task(self._run(key, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def process(self, inbound: Inbound) -> bool:
        """Accept, handle and deliver in one await (benchmarks, tests, the terminal chat).
        False for a duplicate. Errors of the store or records propagate."""
        key = ConversationKey(inbound.district, inbound.channel, inbound.user_id)
        claim = await self._accept(key, inbound.message_id, encode_inbound(inbound))
        if isinstance(claim, str):  # DUPLICATE
            return False
        run = self._running.get(key)
        if run is None:
            run = self._running[key] = _Run(claim=claim)
            await self._run(key, run, propagate=True)
            return True
        # Another turn of this conversation runs here: it takes this one over, in order.
        run.dirty = True
        if claim is not None:
            run.claim = claim
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        run.waiters.append(waiter)
        await waiter
        return True

    async def _accept(
        self, key: ConversationKey, message_id: str, payload: bytes
    ) -> Claim | _Duplicate | None:
        if self._fused is not None:
            reply = await self._fused(key, message_id, payload, self._next_owner())
            return DUPLICATE if reply == DUPLICATE else reply
        if await self.store.accept(key, message_id, payload):
            return None
        return DUPLICATE

    async def recover(self) -> int:
        """Schedule every conversation with inbox items waiting, and every outbox holding
        undelivered replies of a push channel (after a crash or restart, and periodically for
        work whose worker died elsewhere). Returns how many conversations were scheduled."""
        keys = set(await self.store.pending_keys())
        outbox_keys = getattr(self.store, "outbox_keys", None)
        if outbox_keys is not None:
            for key in await outbox_keys():
                if key.channel in self._push:
                    self._backlog.add(key)
                    keys.add(key)
        for key in keys:
            self.schedule(key)
        return len(keys)

    async def idle(self) -> None:
        """Wait until no background worker of this process is running (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def busy(self) -> int:
        return len(self._running)

    # -- the worker ------------------------------------------------------------------------------

    def _next_owner(self) -> str:
        return f"{self._owner}{next(self._serial)}"

    async def _run(self, key: ConversationKey, run: _Run, *, propagate: bool = False) -> None:
        try:
            while True:
                run.dirty = False
                claim, run.claim = run.claim, None
                try:
                    if claim is None:
                        claim = await self.store.claim(key, self._next_owner())
                    fresh = await self._drain(claim) if claim is not None else []
                    await self.deliver(key, fresh)
                except Exception:
                    if propagate:
                        raise
                    # The store or records are unavailable: what was accepted stays in the inbox
                    # and is retried by `recover` (the periodic sweep, or the next start).
                    log.exception("conversation %s: worker stopped; inbox kept for retry", key)
                    return
                if not run.dirty:
                    return
        finally:
            del self._running[key]
            for waiter in run.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _drain(self, claim: Claim | None) -> list[OutboxItem] | None:
        """Handle everything pending, commit after each batch; the outbox items appended (None
        when the store cannot say: the sender then reads the outbox)."""
        engine, codec, records, store = self.engine, self.codec, self.records, self.store
        capture = self.capture
        fresh: list[OutboxItem] | None = []
        while claim is not None:
            key = claim.key
            now = self.clock()
            try:
                session = codec.loads(claim.session) if claim.session is not None else None
                if session is None and records is not None:
                    # Expired (or never had one): rebuilt from the records, so a returning
                    # person is still known as registered.
                    session = await records.restore(key, now)
                outbox: list[bytes] = []
                ref: str | None = None
                inbound: Inbound | None = None
                for item in claim.items:
                    inbound = decode_inbound(item.payload, key)
                    ref = ref or inbound.ref
                    if capture is not None and inbound.kind in _MEDIA:
                        try:
                            inbound = await capture(inbound)
                        except Exception as error:
                            refusal = getattr(error, "text", None)
                            if not isinstance(refusal, str):
                                raise
                            # Refused media never reaches the engine: the person is told why
                            # and is still at the same question (docs/media.md).
                            log.info("conversation %s: media refused: %s", key, error)
                            notice = Outbound(refusal, notice=NoticeKind.RETRY)
                            outbox.append(encode_outbound(notice))
                            continue
                    try:
                        turn = engine.handle(session, inbound, now)
                    except Exception:
                        # A bug must neither loop on one message forever nor lose the session:
                        # keep the session, apologise, move past the message.
                        log.exception("conversation %s: engine failed on %s", key, item.message_id)
                        outbox.append(encode_outbound(Outbound(SORRY, notice=NoticeKind.ERROR)))
                        continue
                    failure = getattr(turn, "error", None)
                    if failure:
                        log.error(
                            "conversation %s: engine error on %s: %s",
                            key, item.message_id, failure, exc_info=failure,
                        )
                    if turn.events and records is not None:
                        await records.apply(key, inbound.message_id, turn.events, now)
                    session = turn.session
                    for message in turn.outbound:
                        outbox.append(self._encode_out(message))
                if records is not None and inbound is not None:
                    await records.touch(key, inbound.timestamp, ref)
                data = codec.dumps(session) if session is not None else None
            except BaseException:
                await _release_quietly(store, claim)
                raise
            upto = claim.items[-1].seq if claim.items else 0
            handled = len(claim.items)
            try:
                if self._commit is not None:
                    claim, added = await self._commit(claim, data, upto, outbox)
                    if fresh is not None:
                        fresh.extend(added)
                else:
                    claim = await store.commit(claim, data, upto, outbox)
                    fresh = None
            except StaleClaim:
                # Our lease ran out and another worker took the conversation over. Nothing of
                # ours was written (records are idempotent by inbound id): start again from
                # what the store holds now (None: the other worker holds it and will finish).
                log.warning("conversation %s: lease expired mid-turn; claiming again", key)
                claim = await store.claim(key, self._next_owner())
                continue
            self.processed += handled
        return fresh

    def _encode_out(self, message: Outbound) -> bytes:
        image = message.image
        if image is not None and self.media_url is not None:
            return encode_outbound(message, self.media_url(image))
        return encode_outbound(message)

    # -- delivery --------------------------------------------------------------------------------

    async def deliver(
        self, key: ConversationKey, fresh: Sequence[OutboxItem] | None = None
    ) -> int:
        """Send the conversation's undelivered replies in order; returns how many went out.
        `fresh`: what the last commit appended (None: unknown, read the outbox). Pull channels
        (the browser) are only told that there is something new."""
        pull = self._pull.get(key.channel)
        if pull is not None:
            if fresh is None or fresh:
                pull.outbox_changed(key)
            return 0
        adapter = self._push.get(key.channel)
        if adapter is None:
            log.error("conversation %s: no adapter for channel %s; outbox kept", key, key.channel)
            return 0
        items: Sequence[OutboxItem]
        if fresh is None or key in self._backlog or not self.exclusive:
            items = await self.store.outbox_read(key, 0)
        else:
            items = fresh
        if not items:
            self._backlog.discard(key)
            return 0
        sent = 0
        done_upto = 0
        try:
            for item in items:
                if not await self._send_one(adapter, key, item.payload):
                    self._backlog.add(key)
                    break
                done_upto = item.seq
                sent += 1
            else:
                self._backlog.discard(key)
        finally:
            if done_upto:
                await self.store.outbox_ack(key, done_upto)
        return sent

    async def _send_one(self, adapter: Adapter, key: ConversationKey, payload: bytes) -> bool:
        """True when the item is finished with (delivered, or failed for good and logged)."""
        message = decode_outbound(payload)
        policy = self.delivery
        wait = policy.backoff
        for attempt in range(1, policy.attempts + 1):
            try:
                await adapter.send(key, message)
                return True
            except RetryLater as error:
                if attempt == policy.attempts:
                    log.warning(
                        "conversation %s: still failing after %d tries (%s); kept",
                        key, attempt, error,
                    )
                    return False
                delay = min(error.retry_after or wait, policy.max_wait)
                wait = min(wait * 2, policy.max_wait)
                await asyncio.sleep(delay)
            except (OutsideWindow, AuthExpired) as error:
                log.warning("conversation %s: delivery postponed: %s", key, error)
                return False
            except AdapterError as error:
                # Final (unreachable, configuration, bad request): never retried, never silent.
                log.error(
                    "conversation %s: message not delivered (%s): %s",
                    key, type(error).__name__, error,
                )
                return True
        return False


async def _release_quietly(store: ConversationStore, claim: Claim) -> None:
    try:
        await store.release(claim)
    except Exception:
        log.exception("conversation %s: could not release the lock (it will expire)", claim.key)


def _utcnow() -> datetime:
    return datetime.now(UTC)
