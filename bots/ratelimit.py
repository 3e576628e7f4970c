"""Rate limits per sending credential: token buckets as GCRA reservations.

A bucket allows `burst` sends at once and `per_second` on average (the generic cell rate
algorithm: one "theoretical arrival time" per bucket instead of a token count and a refill
clock). A send *reserves* its token: the answer says how long to wait before using it, so
senders waiting on one bucket go out in the order they asked, and nothing polls. A reservation
that would wait longer than `max_wait` is refused without taking anything (the sender defers
the message instead of sleeping).

Several buckets can be reserved together, atomically (a Telegram bot's ~30 msg/s overall *and*
~1 msg/s in one chat): the send waits for the slowest, and either all are taken or none.

- `RedisLimiter`: shared by every process using the same Redis and key prefix; one Lua script,
  one round trip, times from the Redis server's clock (`TIME`), so processes never compare
  their clocks. Keys `<prefix>rl:{<group>}<suffix>` (one hash slot per group), each with a TTL
  that ends when its bucket is full again.
- `LocalLimiter`: the same arithmetic in this process (the embedded SQLite and memory stores:
  one process serves a district).

`limiter_for(store)` picks the one that matches a conversation store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float  # sustained sends per second
    burst: int = 1  # sends allowed at once when the bucket is full

    @property
    def interval(self) -> float:
        """Seconds one send uses up."""
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        """Seconds of sends that may go out ahead of the average rate."""
        return (max(self.burst, 1) - 1) * self.interval


@dataclass(frozen=True, slots=True)
class Grant:
    granted: bool  # the tokens are reserved (False: nothing was taken)
    wait: float  # seconds to wait before sending (refused: how long it would have needed)


Buckets = Sequence[tuple[str, Rate]]
"""(suffix, rate) pairs of one group: `("", Rate(30, 30))` for a bot, `(":c:42", Rate(1, 3))`
for one of its chats."""


class Limiter(Protocol):
    async def reserve(self, group: str, buckets: Buckets, max_wait: float) -> Grant:
        """Reserve one token of every bucket, usable after `Grant.wait` seconds, unless that
        wait would exceed `max_wait` (then nothing is reserved)."""
        ...


class LocalLimiter:
    """In-process buckets (monotonic clock)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}  # bucket → theoretical arrival time
        self._reservations = 0

    async def reserve(self, group: str, buckets: Buckets, max_wait: float) -> Grant:
        now = self._clock()
        names = [group + suffix for suffix, _ in buckets]
        tats = [max(self._tat.get(name, now), now) for name in names]
        wait = max(
            [0.0]
            + [tat - rate.tolerance - now for tat, (_, rate) in zip(tats, buckets, strict=True)]
        )
        if wait > max_wait:
            return Grant(False, wait)
        at = now + wait
        for name, tat, (_, rate) in zip(names, tats, buckets, strict=True):
            self._tat[name] = max(tat, at) + rate.interval
        self._reservations += 1
        if self._reservations % 10_000 == 0:
            self._forget(now)
        return Grant(True, wait)

    def _forget(self, now: float) -> None:
        """Drop buckets that are full again (their arrival time has passed)."""
        for name in [name for name, tat in self._tat.items() if tat <= now]:
            del self._tat[name]


# KEYS: the buckets. ARGV: max wait (ms), then interval and tolerance (ms) per bucket.
# Returns the wait in ms as a string (Redis would truncate a Lua number to an integer),
# prefixed with "-" when refused.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local max_wait = tonumber(ARGV[1])
local wait = 0
local tats = {}
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  local w = tat - tonumber(ARGV[2 * i + 1]) - now
  if w > wait then wait = w end
end
if wait > max_wait then return '-' .. string.format('%.3f', wait) end
local at = now + wait
for i = 1, #KEYS do
  local tat = tats[i]
  if tat < at then tat = at end
  tat = tat + tonumber(ARGV[2 * i])
  redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
end
return string.format('%.3f', wait)
"""


class RedisLimiter:
    """Buckets in Redis, shared by every process with the same key prefix."""

    def __init__(self, client: Any, prefix: str = "loa:", runner: Any = None) -> None:
        self.client = client
        self.prefix = prefix
        self._reserve = client.register_script(RESERVE)
        # The store's ScriptRunner when given (bots/state/batching.py): reservations of many
        # conversations then share its round trips.
        self._runner = runner

    def key(self, group: str, suffix: str = "") -> str:
        return f"{self.prefix}rl:{{{quote(group, safe=':')}}}{quote(suffix, safe=':')}"

    async def reserve(self, group: str, buckets: Buckets, max_wait: float) -> Grant:
        keys = [self.key(group, suffix) for suffix, _ in buckets]
        args: list[Any] = [_ms(max_wait)]
        for _, rate in buckets:
            args += [_ms(rate.interval), _ms(rate.tolerance)]
        if self._runner is not None:
            raw = await self._runner(self._reserve, keys, args)
        else:
            raw = await self._reserve(keys=keys, args=args)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        refused = text.startswith("-")
        return Grant(not refused, float(text.lstrip("-")) / 1000)


def _ms(seconds: float) -> str:
    # Lua 5.1's tonumber does not read "inf": a year stands for "no limit".
    return f"{min(seconds, 365 * 86400.0) * 1000:.3f}"


def limiter_for(store: Any) -> Limiter:
    """A Redis limiter sharing the Redis store's client and prefix; else an in-process one."""
    client = getattr(store, "client", None)
    if client is not None and "redis" in type(store).__module__:
        return RedisLimiter(
            client, getattr(store, "prefix", "loa:"), getattr(store, "scripts", None)
        )
    return LocalLimiter()


__all__ = ["Buckets", "Grant", "Limiter", "LocalLimiter", "Rate", "RedisLimiter", "limiter_for"]
