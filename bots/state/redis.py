"""The Redis conversation store: the production hot path, one Lua script per operation.

Key layout (P is the prefix, `loa:` by default; C is `conversation_id(key)`):

    P c:{C}   string  the conversation: a MessagePack array packed by the scripts
                      [1] session bytes or false   [2] CAS version
                      [3] lock owner ("" = free)   [4] lease end (ms, Redis server clock)
                      [5] de-dup window: 8-byte digests of the last N message ids, concatenated
                      [6] last inbox seq           [7] last outbox seq
    P i:{C}   list    pending inbox items "<seq> <len(id)> <id><payload>"; only while non-empty
    P o:{C}   list    outbox items "<seq> <payload>"; only while some are not acknowledged
    P s:{C}   string  the outbox sender's lease: its owner, with the lease as the key's PX TTL
    P d:{C}   string  the deferral of the outbox's first item:
                      "<seq> <attempts> <not before, ms; -1: not by time> <reason> <error>"

One string rather than a hash: a hash whose session exceeds `hash-max-listpack-value` (64 bytes
by default) is stored as a hashtable with ~40 bytes of overhead per field; the packed string
costs ~400 bytes per conversation half-way through a form (docs/state.md has the numbers).
The braces put the three keys in one Redis Cluster hash slot. The conversation value carries the
session TTL (every write refreshes it); the lists carry none, so nothing pending is ever dropped.
Lease times come from the Redis server's clock (`TIME`), so workers never compare their clocks.

Round trips per inbound message in the common case: `accept_and_claim` (1), then
`commit_with_outbox` (1), then the sender's `outbox_ack` (1).
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from bots.state import (
    DEDUPE_WINDOW,
    DEFAULT_LEASE,
    DEFAULT_SESSION_TTL,
    DUPLICATE,
    Duplicate,
    conversation_id,
    parse_conversation_id,
)
from bots.state.batching import ScriptRunner
from bots.state.protocol import Claim, Deferral, OutboxItem, Pending, Sending, StaleClaim
from flows.vocab import ConversationKey

DIGEST_SIZE = 8  # bytes per remembered message id; 64 ids → 512 bytes per conversation

# Shared Lua. `load`/`save` (un)pack the conversation value; `next_seq` hands out sequence
# numbers, and a counter lost with an expired value restarts after the list's last item, never
# below it; `head_seq` reads the first item's number.
_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function load(k)
  local raw = redis.call('GET', k)
  if raw then return cmsgpack.unpack(raw) end
  return {false, 0, '', 0, '', 0, 0}
end
local function save(k, c, ttl)
  redis.call('SET', k, cmsgpack.pack(c), 'PX', ttl)
end
local function next_seq(c, at, list, count)
  local n = c[at]
  if n == 0 then
    local last = redis.call('LINDEX', list, -1)
    if last then n = tonumber(string.match(last, '^%d+')) end
  end
  c[at] = n + count
  return n + 1
end
local function head_seq(list)
  local first = redis.call('LINDEX', list, 0)
  if first then return tonumber(string.match(first, '^%d+')) end
  return nil
end
local function trim(list, upto)
  local head = head_seq(list)
  if not head then return end
  local drop = upto - head + 1
  if drop >= redis.call('LLEN', list) then
    redis.call('DEL', list)
  elseif drop > 0 then
    redis.call('LTRIM', list, drop, -1)
  end
end
"""

# De-dup and append. KEYS: conversation, inbox. ARGV: digest, message id, payload, ttl ms,
# window bytes. Leaves `c` loaded and `seq` set (nil for a duplicate; then nothing is written).
_LUA_ACCEPT = """
local k, inbox = KEYS[1], KEYS[2]
local digest = ARGV[1]
local c = load(k)
local seen = c[5]
local seq = nil
local pos = 1
while true do
  local found = string.find(seen, digest, pos, true)
  if not found then break end
  if found % 8 == 1 then return DUPLICATE end
  pos = found + 1
end
seen = seen .. digest
local window = tonumber(ARGV[5])
if #seen > window then seen = string.sub(seen, -window) end
c[5] = seen
seq = next_seq(c, 6, inbox, 1)
redis.call('RPUSH', inbox, seq .. ' ' .. #ARGV[2] .. ' ' .. ARGV[2] .. ARGV[3])
"""

ACCEPT = (
    _LUA_COMMON
    + _LUA_ACCEPT.replace("return DUPLICATE", "return 0")
    + "save(k, c, ARGV[4])\nreturn 1\n"
)

# Take the lock if free or expired (a live lease is exclusive even against its own owner) and
# read. Returns {0} locked by another,
# {1} nothing pending, {2, session, version, {items}}. Writes only when it takes the lock.
_LUA_TAKE = """
local function take(k, c, inbox, owner, lease, ttl)
  local now = now_ms()
  if c[3] ~= '' and c[4] > now then return {0} end
  local items = redis.call('LRANGE', inbox, 0, -1)
  if #items == 0 then return {1} end
  c[3] = owner
  c[4] = now + lease
  save(k, c, ttl)
  return {2, c[1], c[2], items}
end
"""

# KEYS: conversation, inbox. ARGV: owner, lease ms, ttl ms.
CLAIM = (
    _LUA_COMMON
    + _LUA_TAKE
    + "return take(KEYS[1], load(KEYS[1]), KEYS[2], ARGV[1], tonumber(ARGV[2]), ARGV[3])\n"
)

# KEYS: conversation, inbox. ARGV: digest, id, payload, ttl, window, owner, lease.
# Returns {3} for a duplicate, else what `take` returns (the accept is saved either way).
ACCEPT_AND_CLAIM = (
    _LUA_COMMON
    + _LUA_TAKE
    + _LUA_ACCEPT.replace("return DUPLICATE", "return {3}")
    + "local taken = take(k, c, inbox, ARGV[6], tonumber(ARGV[7]), ARGV[4])\n"
    + "if taken[1] ~= 2 then save(k, c, ARGV[4]) end\n"
    + "return taken\n"
)

# KEYS: conversation, inbox, outbox. ARGV: owner, version, has session (0/1), session,
# upto seq, lease ms, ttl ms, outbox payloads...
# Returns {0} stale; {1, version, first outbox seq} released; {2, version, first outbox seq,
# {items}} when more is pending (lock kept, lease renewed).
COMMIT = (
    _LUA_COMMON
    + """
local k, inbox, outbox = KEYS[1], KEYS[2], KEYS[3]
local raw = redis.call('GET', k)
if not raw then return {0} end
local c = cmsgpack.unpack(raw)
if c[3] ~= ARGV[1] or c[2] ~= tonumber(ARGV[2]) then return {0} end
if ARGV[3] == '1' then c[1] = ARGV[4] else c[1] = false end
c[2] = c[2] + 1
trim(inbox, tonumber(ARGV[5]))
local count = #ARGV - 7
local first = 0
if count > 0 then
  first = next_seq(c, 7, outbox, count)
  local items = {}
  for n = 1, count do items[n] = (first + n - 1) .. ' ' .. ARGV[7 + n] end
  redis.call('RPUSH', outbox, unpack(items))
end
local items = redis.call('LRANGE', inbox, 0, -1)
local reply
if #items > 0 then
  c[4] = now_ms() + tonumber(ARGV[6])
  reply = {2, c[2], first, items}
else
  c[3] = ''
  c[4] = 0
  reply = {1, c[2], first}
end
save(k, c, ARGV[7])
return reply
"""
)

# KEYS: conversation. ARGV: owner.
RELEASE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local c = cmsgpack.unpack(raw)
if c[3] ~= ARGV[1] then return 0 end
c[3] = ''
c[4] = 0
redis.call('SET', KEYS[1], cmsgpack.pack(c), 'KEEPTTL')
return 1
"""

# KEYS: outbox. ARGV: upto seq.
OUTBOX_ACK = _LUA_COMMON + "trim(KEYS[1], tonumber(ARGV[1]))\nreturn 0\n"


# The sender's scripts. KEYS: sender lease, deferral, outbox (one hash slot).
# ARGV: owner, lease ms. Returns {0} when another owner holds the lease, else
# {1, outbox items, deferral or ""}.
OUTBOX_CLAIM = """
if tonumber(ARGV[2]) > 0 then
  local holder = redis.call('GET', KEYS[1])
  if holder and holder ~= ARGV[1] then return {0} end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return {1, redis.call('LRANGE', KEYS[3], 0, -1), redis.call('GET', KEYS[2]) or ''}
"""

_LUA_SENDER_RELEASE = """
local function sender_release(lease, owner, ms)
  if owner ~= '' and redis.call('GET', lease) == owner then
    if ms > 0 then redis.call('PEXPIRE', lease, ms) else redis.call('DEL', lease) end
  end
end
"""

# ARGV: owner, upto seq, lease ms.
OUTBOX_DONE = (
    _LUA_COMMON
    + _LUA_SENDER_RELEASE
    + """
local upto = tonumber(ARGV[2])
if upto > 0 then
  trim(KEYS[3], upto)
  local d = redis.call('GET', KEYS[2])
  if d and tonumber(string.match(d, '^%d+')) <= upto then redis.call('DEL', KEYS[2]) end
end
sender_release(KEYS[1], ARGV[1], tonumber(ARGV[3]))
return 0
"""
)

# ARGV: owner, seq, deferral. Items only ever leave the outbox from its head, so the item is
# still there when the head is at or before it and the tail at or after it.
OUTBOX_DEFER = (
    _LUA_COMMON
    + _LUA_SENDER_RELEASE
    + """
local seq = tonumber(ARGV[2])
local head = head_seq(KEYS[3])
if head and head <= seq then
  local last = redis.call('LINDEX', KEYS[3], -1)
  if tonumber(string.match(last, '^%d+')) >= seq then redis.call('SET', KEYS[2], ARGV[3]) end
end
sender_release(KEYS[1], ARGV[1], 0)
return 0
"""
)


def _deferral_text(deferral: Deferral) -> bytes:
    not_before = -1 if deferral.not_before == float("inf") else round(deferral.not_before * 1000)
    reason = deferral.reason.replace(" ", "_") or "-"
    return f"{deferral.seq} {deferral.attempts} {not_before} {reason} {deferral.error}".encode()


def _deferral(raw: bytes | None) -> Deferral | None:
    if not raw:
        return None
    seq, attempts, not_before, reason, error = raw.decode().split(" ", 4)
    ms = int(not_before)
    return Deferral(
        int(seq), int(attempts), float("inf") if ms < 0 else ms / 1000, reason, error
    )


def _digest(message_id: bytes) -> bytes:
    return blake2b(message_id, digest_size=DIGEST_SIZE).digest()


def _pending(raw: bytes) -> Pending:
    seq, size, rest = raw.split(b" ", 2)
    n = int(size)
    return Pending(int(seq), rest[:n].decode(), rest[n:])


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisStore:
    """`bots.state.Store` on Redis. `lease` and `session_ttl` are in seconds."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "loa:",
        lease: float = DEFAULT_LEASE,
        session_ttl: float = DEFAULT_SESSION_TTL,
        dedupe_window: int = DEDUPE_WINDOW,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_ms = max(1, round(lease * 1000))
        self.ttl_ms = max(1, round(session_ttl * 1000))
        self.window_bytes = dedupe_window * DIGEST_SIZE
        self._owns_client = owns_client
        self.scripts = ScriptRunner(client)  # one round trip for the calls of a loop iteration
        self._accept = client.register_script(ACCEPT)
        self._claim = client.register_script(CLAIM)
        self._accept_and_claim = client.register_script(ACCEPT_AND_CLAIM)
        self._commit = client.register_script(COMMIT)
        self._release = client.register_script(RELEASE)
        self._outbox_ack = client.register_script(OUTBOX_ACK)
        self._outbox_claim = client.register_script(OUTBOX_CLAIM)
        self._outbox_done = client.register_script(OUTBOX_DONE)
        self._outbox_defer = client.register_script(OUTBOX_DEFER)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = "loa:",
        lease: float = DEFAULT_LEASE,
        session_ttl: float = DEFAULT_SESSION_TTL,
        dedupe_window: int = DEDUPE_WINDOW,
        max_connections: int = 64,
    ) -> RedisStore:
        """A store with its own connection pool (closed by `close`); fails early if Redis is
        unreachable. The pool *waits* for a free connection when all `max_connections` are
        busy: redis-py's default pool (100 connections) raises instead, which under a burst
        stopped workers and senders until the next recovery sweep."""
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=30, decode_responses=False
        )
        client: Redis = Redis.from_pool(pool)  # closing the client closes the pool
        try:
            await client.ping()
        except Exception:
            await client.aclose()
            raise
        return cls(
            client,
            prefix=prefix,
            lease=lease,
            session_ttl=session_ttl,
            dedupe_window=dedupe_window,
            owns_client=True,
        )

    def keys(self, key: ConversationKey) -> tuple[str, str, str]:
        """The conversation, inbox and outbox key names of a conversation."""
        conv = conversation_id(key)
        p = self.prefix
        return f"{p}c:{{{conv}}}", f"{p}i:{{{conv}}}", f"{p}o:{{{conv}}}"

    # -- the protocol ----------------------------------------------------------------------

    async def accept(self, key: ConversationKey, message_id: str, payload: bytes) -> bool:
        conv, inbox, _ = self.keys(key)
        mid = message_id.encode()
        args = (_digest(mid), mid, payload, self.ttl_ms, self.window_bytes)
        return bool(await self.scripts(self._accept, (conv, inbox), args))

    async def accept_and_claim(
        self, key: ConversationKey, message_id: str, payload: bytes, owner: str
    ) -> Claim | Duplicate | None:
        conv, inbox, _ = self.keys(key)
        mid = message_id.encode()
        args = (_digest(mid), mid, payload, self.ttl_ms, self.window_bytes, owner, self.lease_ms)
        reply = await self.scripts(self._accept_and_claim, (conv, inbox), args)
        if reply[0] == 3:
            return DUPLICATE
        return self._claim_from(key, owner, reply)

    async def claim(self, key: ConversationKey, owner: str) -> Claim | None:
        conv, inbox, _ = self.keys(key)
        reply = await self.scripts(self._claim, (conv, inbox), (owner, self.lease_ms, self.ttl_ms))
        return self._claim_from(key, owner, reply)

    @staticmethod
    def _claim_from(key: ConversationKey, owner: str, reply: list[Any]) -> Claim | None:
        if reply[0] != 2:
            return None
        items = tuple(_pending(raw) for raw in reply[3])
        return Claim(key, owner, reply[1], int(reply[2]), items)

    async def commit(
        self, claim: Claim, session: bytes | None, upto_seq: int, outbox: Sequence[bytes]
    ) -> Claim | None:
        return (await self.commit_with_outbox(claim, session, upto_seq, outbox))[0]

    async def commit_with_outbox(
        self, claim: Claim, session: bytes | None, upto_seq: int, outbox: Sequence[bytes]
    ) -> tuple[Claim | None, list[OutboxItem]]:
        keys = self.keys(claim.key)
        args: list[Any] = [
            claim.owner,
            claim.version,
            0 if session is None else 1,
            b"" if session is None else session,
            upto_seq,
            self.lease_ms,
            self.ttl_ms,
        ]
        args.extend(outbox)
        reply = await self.scripts(self._commit, keys, args)
        status = reply[0]
        if status == 0:
            raise StaleClaim(str(claim.key))
        first = int(reply[2])
        added = [OutboxItem(first + n, payload) for n, payload in enumerate(outbox)]
        if status == 2:
            items = tuple(_pending(raw) for raw in reply[3])
            return Claim(claim.key, claim.owner, session, int(reply[1]), items), added
        return None, added

    async def release(self, claim: Claim) -> None:
        conv, _, _ = self.keys(claim.key)
        await self.scripts(self._release, (conv,), (claim.owner,))

    async def outbox_read(self, key: ConversationKey, after_seq: int = 0) -> list[OutboxItem]:
        _, _, outbox = self.keys(key)
        items = []
        raw_items: list[bytes] = await self.client.lrange(outbox, 0, -1)  # type: ignore[assignment]
        for raw in raw_items:
            seq, payload = raw.split(b" ", 1)
            n = int(seq)
            if n > after_seq:
                items.append(OutboxItem(n, payload))
        return items

    async def outbox_ack(self, key: ConversationKey, upto_seq: int) -> None:
        _, _, outbox = self.keys(key)
        await self.scripts(self._outbox_ack, (outbox,), (upto_seq,))

    # -- the sender's additions ------------------------------------------------------------

    def sender_keys(self, key: ConversationKey) -> tuple[str, str, str]:
        """The sender lease, deferral and outbox key names of a conversation."""
        conv = conversation_id(key)
        p = self.prefix
        return f"{p}s:{{{conv}}}", f"{p}d:{{{conv}}}", f"{p}o:{{{conv}}}"

    async def outbox_claim(self, key: ConversationKey, owner: str, lease: float) -> Sending | None:
        lease_ms = max(1, round(lease * 1000)) if lease > 0 else 0
        reply = await self.scripts(self._outbox_claim, self.sender_keys(key), (owner, lease_ms))
        if reply[0] == 0:
            return None
        items = []
        for raw in reply[1]:
            seq, payload = raw.split(b" ", 1)
            items.append(OutboxItem(int(seq), payload))
        deferral = _deferral(reply[2])
        if deferral is not None and (not items or deferral.seq != items[0].seq):
            deferral = None
        return Sending(tuple(items), deferral)

    async def outbox_done(
        self, key: ConversationKey, owner: str, upto_seq: int, lease: float = 0.0
    ) -> None:
        lease_ms = max(1, round(lease * 1000)) if lease > 0 else 0
        await self.scripts(self._outbox_done, self.sender_keys(key), (owner, upto_seq, lease_ms))

    async def outbox_defer(self, key: ConversationKey, owner: str, deferral: Deferral) -> None:
        await self.scripts(
            self._outbox_defer, self.sender_keys(key),
            (owner, deferral.seq, _deferral_text(deferral)),
        )

    async def outbox_due(self, now: float) -> list[ConversationKey]:
        """SCANs the outbox lists, then reads each one's first item and deferral in one
        pipelined round trip per thousand: recovery sweeps only."""
        keys = await self._scan("o")
        due: list[ConversationKey] = []
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            pipe = self.client.pipeline(transaction=False)
            for key in batch:
                _, deferred, outbox = self.sender_keys(key)
                pipe.get(deferred)
                pipe.lindex(outbox, 0)
            replies = await pipe.execute()
            for n, key in enumerate(batch):
                deferral = _deferral(replies[2 * n])
                first = replies[2 * n + 1]
                if first is None:
                    continue  # acknowledged since the scan
                head = int(first.split(b" ", 1)[0])
                if deferral is None or deferral.seq != head or deferral.not_before <= now:
                    due.append(key)
        return due

    async def _scan(self, kind: str) -> list[ConversationKey]:
        start = len(self.prefix) + len(kind) + 2  # "<prefix><kind>:{"
        pattern = _glob_escape(self.prefix) + kind + ":{*}"
        found: list[ConversationKey] = []
        async for raw in self.client.scan_iter(match=pattern, count=1000, _type="list"):
            found.append(parse_conversation_id(raw.decode()[start:-1]))
        return found

    async def pending_keys(self) -> list[ConversationKey]:
        """SCANs the inbox lists (they exist only while non-empty): O(keys), recovery only."""
        return await self._scan("i")

    async def outbox_keys(self) -> list[ConversationKey]:
        return await self._scan("o")

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()
