"""The pipeline: inbox → worker (media, engine, records, compare-and-set) → outbox → delivery.

    ingest(inbound)   encode once (orjson) → store.accept_and_claim (durable, de-duplicated)
                      → return, so the caller acknowledges the platform → schedule the
                      conversation's worker.
    worker            claim → for each pending item in arrival order: media capture (images and
                      files) → engine.handle → records (idempotent by inbound id) →
                      store.commit_with_outbox (compare-and-set the session, drop the handled
                      items, append the replies) → loop while the commit hands back a next claim.
    delivery          after the lock is released (it is never held while waiting on a
                      platform): per conversation one sender at a time (a sender lease in the
                      store when processes share it) → for each undelivered reply in order:
                      messaging window → rate limit → adapter.send → acknowledge; a failure
                      either defers the reply durably (retry later, refreshed auth, outside the
                      window) or, when final, records it for organisers and moves on. The policy
                      is bots/delivery.py; docs/delivery.md says why.

Everything a conversation needs lives in the store; the only process memory is `_running`, a map
of conversations whose worker runs in this process right now, and `_sending`, those whose sender
does (scheduling optimisations: one worker and one sender per conversation per process, so
replies go out in order), plus timers that wake deferred replies (the periodic `recover` sweep
finds them too, e.g. after a restart).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
import os
import random
import socket
import time
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
from bots.delivery import WINDOWS, DeferReason, DeliveryPolicy, buckets, parts_done, window_open
from bots.ratelimit import Limiter
from bots.state import DUPLICATE
from bots.state import Duplicate as _Duplicate
from bots.state.protocol import (
    Claim,
    ConversationStore,
    Deferral,
    OutboxItem,
    Sending,
    StaleClaim,
)
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

MAX_DRAINS = 12  # below the records pool (5 + 10 overflow): a turn never times out on it
TOUCH_EVERY = 60.0  # seconds: write a person's last inbound time at most this often
TOUCHED_MAX = 100_000  # conversations whose last write this process remembers

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

    # Optional, looked up with getattr (the sender uses them when present):
    #   async def last_inbound(key) -> datetime | None      the messaging window's start
    #   async def undelivered(key, message, error, now)     a final failure, for organisers


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


@dataclass(slots=True)
class _Sender:
    """A conversation whose sender runs in this process now."""

    again: bool = False  # asked to send meanwhile: read the outbox again before stopping
    turn: bool = False  # a new turn appended replies: our own backoff need not be waited out



class Pipeline:
    """Drives conversations from the store's inbox through the engine to the outbox.

    `exclusive`: only this process delivers this store's outboxes (the embedded SQLite and
    memory stores; default False for Redis, which several processes may share). Then replies a
    commit just appended are sent as they are, without reading the outbox back, unless this
    process knows of older undelivered ones (`_backlog`, refilled from `outbox_keys` by
    `recover`). When shared, the sender takes the conversation's sender lease and reads the
    outbox first (`outbox_claim`, one round trip), so two processes never send one
    conversation's replies at once and none acknowledges past a reply another left undelivered.
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
        metrics: Any | None = None,
        limiter: Limiter | None = None,
        rng: random.Random | None = None,
        max_drains: int = MAX_DRAINS,
    ) -> None:
        self.store = store
        self.capture = capture
        # Counters for /metrics (bots.ops.metrics.Metrics); None: nothing is counted.
        self.metrics = metrics
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
        # Rate limits per credential (bots/ratelimit.py); None: unlimited (tests, benchmarks).
        # The runtime passes `limiter_for(store)`: shared through Redis when the store is.
        self.limiter = limiter
        self._rng = rng or random.Random()
        self._running: dict[ConversationKey, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog: set[ConversationKey] = set()  # outboxes known to hold older replies
        self._sending: dict[ConversationKey, _Sender] = {}
        self._drains = asyncio.Semaphore(max_drains)  # conversations in engine + records at once
        self._timers: dict[ConversationKey, asyncio.TimerHandle] = {}
        self._wrote: dict[ConversationKey, datetime] = {}  # the person's last message, if known
        self._touched: dict[ConversationKey, datetime] = {}  # last inbound time written here
        self._takes: dict[type, tuple[bool, bool]] = {}  # adapter.send takes (outbox_id, start)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}:"
        self._sender_owner = f"{self._owner}sender"
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
        if self.metrics is not None:
            self.metrics.accepted(key.channel, duplicate=isinstance(claim, str))
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
        if self.metrics is not None:
            self.metrics.accepted(key.channel, duplicate=isinstance(claim, str))
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
        outbox_due = getattr(self.store, "outbox_due", None)
        if outbox_keys is not None and (self.exclusive or outbox_due is None):
            # Every outbox with replies left, deferred or not, must be read before sending.
            for key in await outbox_keys():
                if key.channel in self._push:
                    self._backlog.add(key)
                    if outbox_due is None:
                        keys.add(key)
        if outbox_due is not None:
            # Deferred replies wait for their time (or for the person to write again).
            for key in await outbox_due(time.time()):
                if key.channel in self._push:
                    self._backlog.add(key)
                    keys.add(key)
        for key in keys:
            self.schedule(key)
        return len(keys)

    async def idle(self) -> None:
        """Wait until no background worker of this process is running (tests, shutdown).
        Replies deferred to a later time are not waited for (`cancel_timers`)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def cancel_timers(self) -> None:
        """Forget the wake-ups of deferred replies (shutdown): they stay in the store, and the
        next start's `recover` finds them."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

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
                    if claim is None:
                        fresh: list[OutboxItem] | None = []
                    else:
                        # Bounded: a burst beyond what the records database can take waits
                        # here, in order, instead of queueing on its connection pool until
                        # the pool's timeout fails the turns. Delivery is outside the bound.
                        async with self._drains:
                            fresh = await self._drain(claim)
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
                wrote: Inbound | None = None  # the person's last message of the batch
                for item in claim.items:
                    inbound = decode_inbound(item.payload, key)
                    ref = ref or inbound.ref
                    if inbound.kind is not InboundKind.SYSTEM:
                        # An organiser's action is not the person writing: it must not open
                        # the platform's messaging window (bots/delivery.py).
                        wrote = inbound
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
                if wrote is not None:
                    self._wrote[key] = wrote.timestamp
                    if records is not None and self._touch_due(key, wrote.timestamp, ref):
                        await records.touch(key, wrote.timestamp, ref)
                        self._touched[key] = wrote.timestamp
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
            if self.metrics is not None:
                self.metrics.processed(key.channel, handled)
        return fresh

    def _touch_due(self, key: ConversationKey, at: datetime, ref: str | None) -> bool:
        """Whether to write the person's inbound time to the records now. A write per message
        was most of the records' cost (a transaction each); the window only needs minutes of
        precision, and an older time errs on the safe side (the window seems to close up to
        TOUCH_EVERY early). A deep-link ref, or a conversation new to this process, always
        writes."""
        last = self._touched.pop(key, None)
        if last is not None:
            self._touched[key] = last  # most recent last: the oldest are forgotten first
        if ref is not None or last is None or (at - last).total_seconds() >= TOUCH_EVERY:
            if len(self._touched) >= TOUCHED_MAX:
                del self._touched[next(iter(self._touched))]
            return True
        return False

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
        (the browser) are only told that there is something new. Never raises for a platform's
        refusal (see bots/delivery.py); a store or records outage propagates."""
        pull = self._pull.get(key.channel)
        if pull is not None:
            if fresh is None or fresh:
                pull.outbox_changed(key)
            if fresh and self.metrics is not None:
                self.metrics.sent(key.channel, len(fresh))  # the page fetches them itself
            return 0
        adapter = self._push.get(key.channel)
        if adapter is None:
            log.error("conversation %s: no adapter for channel %s; outbox kept", key, key.channel)
            return 0
        handles = getattr(adapter, "handles", None)
        if handles is not None and not self.exclusive and not handles(key):
            # A process sharing this store serves that district's bot (e.g. the PTB bridge,
            # bots/ptb_bridge.py): its sweep sends these replies; failing them here as a
            # configuration error would drop them.
            log.info("conversation %s: its channel is served by another process", key)
            return 0
        sender = self._sending.get(key)
        if sender is not None:
            # This conversation's sender runs here already: it reads the outbox once more.
            sender.again = True
            sender.turn = sender.turn or bool(fresh)
            return 0
        sender = self._sending[key] = _Sender(turn=bool(fresh))
        sent = 0
        try:
            while True:
                turn, sender.turn, sender.again = sender.turn, False, False
                sent += await self._send_outbox(adapter, key, fresh, turn)
                if not sender.again:
                    return sent
                fresh = None
        finally:
            del self._sending[key]
            self._wrote.pop(key, None)

    async def _send_outbox(
        self,
        adapter: Adapter,
        key: ConversationKey,
        fresh: Sequence[OutboxItem] | None,
        turn: bool,
    ) -> int:
        store: Any = self.store
        shared = not self.exclusive
        owner = self._sender_owner if shared else ""
        lease = self.delivery.lease if shared else 0.0
        deferral: Deferral | None = None
        items: Sequence[OutboxItem]
        if fresh is None or key in self._backlog or shared:
            sending: Sending | None = await store.outbox_claim(key, owner, lease)
            if sending is None:
                # Another process is sending this conversation's replies; ours may have been
                # appended after it read the outbox, so look again shortly.
                self._wake_later(key, self.delivery.busy_retry)
                return 0
            items, deferral = sending.items, sending.deferral
        else:
            items = fresh
        if not items:
            self._backlog.discard(key)
            if shared:
                await store.outbox_done(key, owner, 0)
            return 0
        attempts = start = 0
        if deferral is not None:
            attempts, start = deferral.attempts, parts_done(deferral.reason)
            hold = await self._hold(key, deferral, turn)
            if hold is not None:
                self._backlog.add(key)
                if shared:
                    await store.outbox_done(key, owner, 0)
                if math.isfinite(hold):
                    self._wake_later(key, hold)
                return 0
        # Acknowledged once per batch (a turn's replies: usually one to three), renewing the
        # sender lease on the way when a batch runs long: a crash mid-batch re-sends what this
        # batch had delivered (at-least-once), for one store round trip per batch, not per item.
        sent = done = 0
        renew_at = time.monotonic() + lease / 2
        for item in items:
            later = await self._send_item(adapter, key, item, attempts, start)
            attempts = start = 0
            if later is not None:
                self._backlog.add(key)
                if done:
                    await store.outbox_done(key, owner, done, lease)
                await store.outbox_defer(key, owner, later)
                if math.isfinite(later.not_before):
                    self._wake_later(key, later.not_before - time.time())
                return sent
            done = item.seq
            sent += 1
            if shared and time.monotonic() > renew_at:
                await store.outbox_done(key, owner, done, lease)
                renew_at = time.monotonic() + lease / 2
        await store.outbox_done(key, owner, done)
        self._backlog.discard(key)
        return sent

    async def _hold(self, key: ConversationKey, deferral: Deferral, turn: bool) -> float | None:
        """Seconds the deferred first item must still wait (inf: until the person writes
        again), or None to try it now."""
        reason = DeferReason.of(deferral.reason)
        if reason is DeferReason.WINDOW:
            return None if await self._window_open(key) else math.inf
        if reason is DeferReason.RETRY and turn:
            return None  # our own guess at a backoff; the person's new turn tries at once
        wait = deferral.not_before - time.time()
        return wait if wait > 0 else None

    async def _window_open(self, key: ConversationKey) -> bool:
        if key.channel not in WINDOWS:
            return True
        now = self.clock()
        wrote = self._wrote.get(key)
        if wrote is not None and window_open(key.channel, wrote, now):
            return True
        lookup = getattr(self.records, "last_inbound", None)
        if lookup is None:
            return True  # nothing on record to judge by: let the platform decide
        return window_open(key.channel, await lookup(key), now)

    async def _send_item(
        self,
        adapter: Adapter,
        key: ConversationKey,
        item: OutboxItem,
        attempts: int,
        start: int = 0,
    ) -> Deferral | None:
        """Deliver one reply: None when finished with it (delivered, or failed for good and
        recorded), else the deferral to store. Waits in place only for short delays. `start`:
        parts of it an earlier try delivered (a multi-part message resumes after them)."""
        message = decode_outbound(item.payload)
        policy = self.delivery
        if not await self._window_open(key):
            note = "Ngoài khung nhắn tin của nền tảng; chờ người dùng nhắn lại."
            return Deferral(item.seq, attempts, math.inf, DeferReason.WINDOW.stored(start), note)
        limited = buckets(adapter, key) if self.limiter is not None else None
        tries = 0
        while True:
            if limited is not None and self.limiter is not None:
                grant = await self.limiter.reserve(*limited, max_wait=policy.max_wait)
                if not grant.granted:
                    note = "Đang chờ theo giới hạn tốc độ gửi của kênh."
                    return Deferral(
                        item.seq, attempts, time.time() + grant.wait,
                        DeferReason.WAIT.stored(start), note,
                    )
                if grant.wait > 0:
                    await asyncio.sleep(grant.wait)
            tries += 1
            try:
                await self._call_send(adapter, key, message, item.seq, start)
                return None
            except (RetryLater, AuthExpired) as error:
                attempts += 1
                start = max(start, error.parts_done)
                delay, reason = policy.retry(attempts, error, self._rng)
                log.warning(
                    "conversation %s: reply %d not delivered (try %d, %s): %s; again in %.1f s",
                    key, item.seq, attempts, type(error).__name__, error, delay,
                )
                if tries < policy.attempts and delay <= policy.max_wait:
                    await asyncio.sleep(delay)
                    continue
                return Deferral(
                    item.seq, attempts, time.time() + delay, reason.stored(start), str(error)
                )
            except OutsideWindow as error:
                log.info("conversation %s: reply %d waits for the person: %s", key, item.seq, error)
                start = max(start, error.parts_done)
                return Deferral(
                    item.seq, attempts, math.inf, DeferReason.WINDOW.stored(start), str(error)
                )
            except AdapterError as error:
                # Final (unreachable, configuration, bad request): never retried, never silent.
                log.error(
                    "conversation %s: reply %d will not be delivered (%s): %s",
                    key, item.seq, type(error).__name__, error,
                )
                return await self._record_failure(key, item, message, error, attempts)
            except Exception as error:
                # A bug in an adapter: keep the reply and retry with backoff, loudly.
                attempts += 1
                delay, _ = policy.retry(attempts, RetryLater(str(error)), self._rng)
                log.exception("conversation %s: sending reply %d failed", key, item.seq)
                return Deferral(
                    item.seq, attempts, time.time() + delay, DeferReason.RETRY.stored(start),
                    repr(error),
                )

    async def _call_send(
        self, adapter: Adapter, key: ConversationKey, message: Outbound, seq: int, start: int
    ) -> None:
        """`adapter.send`, with the outbox id for adapters that mark their sends with it (the
        Messenger metadata echoes carry back) and the parts to skip for those that split."""
        kind = type(adapter)
        takes = self._takes.get(kind)
        if takes is None:
            try:
                names = inspect.signature(adapter.send).parameters
            except (TypeError, ValueError):
                names = {}  # type: ignore[assignment]
            takes = self._takes[kind] = ("outbox_id" in names, "start" in names)
        options: dict[str, Any] = {}
        if takes[0]:
            options["outbox_id"] = str(seq)
        if start and takes[1]:
            options["start"] = start
        try:
            await adapter.send(key, message, **options)
        except Exception as error:
            if self.metrics is not None:
                self.metrics.failed(key.channel, error)
            raise
        if self.metrics is not None:
            self.metrics.sent(key.channel)

    async def _record_failure(
        self,
        key: ConversationKey,
        item: OutboxItem,
        message: Outbound,
        error: AdapterError,
        attempts: int,
    ) -> Deferral | None:
        """Write a final failure for organisers; only then may the reply leave the outbox."""
        record = getattr(self.records, "undelivered", None)
        if record is None:
            return None  # no records (benchmarks, unit tests): the error log above is all
        try:
            await record(key, message, error, self.clock())
        except Exception as problem:
            log.exception("conversation %s: could not record the failed reply %d", key, item.seq)
            delay, _ = self.delivery.retry(attempts + 1, RetryLater(str(problem)), self._rng)
            return Deferral(
                item.seq, attempts + 1, time.time() + delay, DeferReason.RETRY.value, str(error)
            )
        return None

    def _wake_later(self, key: ConversationKey, delay: float) -> None:
        """Look at this conversation again in `delay` seconds (the earliest wake-up wins)."""
        loop = asyncio.get_running_loop()
        at = loop.time() + max(delay, 0.01)
        current = self._timers.get(key)
        if current is not None:
            if current.when() <= at:
                return
            current.cancel()
        self._timers[key] = loop.call_at(at, self._wake, key)

    def _wake(self, key: ConversationKey) -> None:
        self._timers.pop(key, None)
        self.schedule(key)


async def _release_quietly(store: ConversationStore, claim: Claim) -> None:
    try:
        await store.release(claim)
    except Exception:
        log.exception("conversation %s: could not release the lock (it will expire)", claim.key)


def _utcnow() -> datetime:
    return datetime.now(UTC)
