"""Prometheus metrics at `GET /metrics` (text exposition format, prometheus-client).

Each `loa serve` process has its own registry and is scraped on its own (several processes
behind a load balancer: scrape each one, `sum by` in queries). The hot path only increments
counters (pre-bound per channel: a dict lookup and a locked add, well under a microsecond);
gauges that need a store round trip (inbox, outbox) are read when Prometheus scrapes, and
cached a few seconds.

    loa_messages_in_total{channel}            counter   inbound messages accepted (stored durably)
    loa_messages_duplicate_total{channel}     counter   platform retries recognised and dropped
    loa_messages_processed_total{channel}     counter   inbound messages handled by a worker
    loa_messages_out_total{channel}           counter   replies delivered (push channels) or
                                                        made available (the browser chat)
    loa_delivery_failures_total{channel,reason}
                                              counter   failed send attempts; reason is one of
                                                        retry_later, outside_window,
                                                        auth_expired, unreachable,
                                                        configuration, bad_request, error
    loa_media_refused_total{reason}           counter   media refused (disk_full)
    loa_webhook_ack_seconds{channel}          histogram webhook request (or a browser send or
                                                        upload) to its acknowledgement
    loa_event_loop_lag_seconds                histogram how late a 0.5 s sleep wakes up
    loa_event_loop_lag_last_seconds           gauge     the latest such measurement
    loa_inbox_pending_conversations           gauge     conversations with inbound waiting
    loa_outbox_pending_conversations          gauge     push-channel conversations with replies
                                                        not delivered yet
    loa_conversations_running                 gauge     conversations a worker of this process
                                                        handles now
    loa_disk_free_bytes, loa_disk_level       gauge     free space under the data directory;
                                                        level 0 ok, 1 low, 2 full
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from flows.vocab import Channel

log = logging.getLogger("loa.ops.metrics")

CHANNELS = tuple(channel.value for channel in Channel)
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_EVERY = 0.5  # seconds between event-loop lag probes
GAUGE_MAX_AGE = 5.0  # seconds a store-backed gauge reading is reused

# Adapter error class → reason label (a fixed set: label values must not grow unbounded).
FAILURE_REASONS = {
    "RetryLater": "retry_later",
    "OutsideWindow": "outside_window",
    "AuthExpired": "auth_expired",
    "RecipientUnreachable": "unreachable",
    "Unreachable": "unreachable",
    "ConfigurationError": "configuration",
    "BadRequest": "bad_request",
}


def failure_reason(error: BaseException) -> str:
    for cls in type(error).__mro__:
        reason = FAILURE_REASONS.get(cls.__name__)
        if reason is not None:
            return reason
    return "error"


class Metrics:
    """One process's metrics. `registry` is private to it (tests and several runtimes in one
    process never clash)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.messages_in = Counter(
            "loa_messages_in", "Inbound messages accepted", ["channel"], registry=registry
        )
        self.messages_duplicate = Counter(
            "loa_messages_duplicate", "Inbound duplicates dropped", ["channel"], registry=registry
        )
        self.messages_processed = Counter(
            "loa_messages_processed", "Inbound messages handled", ["channel"], registry=registry
        )
        self.messages_out = Counter(
            "loa_messages_out", "Replies delivered or made available", ["channel"],
            registry=registry,
        )
        self.delivery_failures = Counter(
            "loa_delivery_failures", "Failed send attempts", ["channel", "reason"],
            registry=registry,
        )
        self.media_refused = Counter(
            "loa_media_refused", "Media refused", ["reason"], registry=registry
        )
        self.webhook_ack = Histogram(
            "loa_webhook_ack_seconds", "Webhook request to acknowledgement", ["channel"],
            buckets=ACK_BUCKETS, registry=registry,
        )
        self.loop_lag = Histogram(
            "loa_event_loop_lag_seconds", "Event-loop sleep overshoot", buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.loop_lag_last = Gauge(
            "loa_event_loop_lag_last_seconds", "Latest event-loop lag probe", registry=registry
        )
        self.inbox_pending = Gauge(
            "loa_inbox_pending_conversations", "Conversations with inbound waiting",
            registry=registry,
        )
        self.outbox_pending = Gauge(
            "loa_outbox_pending_conversations", "Push conversations with replies undelivered",
            registry=registry,
        )
        self.running = Gauge(
            "loa_conversations_running", "Conversations being handled in this process",
            registry=registry,
        )
        self.disk_free = Gauge(
            "loa_disk_free_bytes", "Free bytes under the data directory", registry=registry
        )
        self.disk_level = Gauge(
            "loa_disk_level", "Disk level: 0 ok, 1 low, 2 full", registry=registry
        )
        # Pre-bound children: the hot path skips `labels()` (and every channel shows, at 0).
        self._in = {name: self.messages_in.labels(name) for name in CHANNELS}
        self._dup = {name: self.messages_duplicate.labels(name) for name in CHANNELS}
        self._done = {name: self.messages_processed.labels(name) for name in CHANNELS}
        self._out = {name: self.messages_out.labels(name) for name in CHANNELS}
        self._ack = {name: self.webhook_ack.labels(name) for name in CHANNELS}
        self.media_refused.labels("disk_full")
        # What a scrape reads from the runtime (set by `Operations.start`).
        self.sources: dict[str, Callable[[], Awaitable[int] | int]] = {}
        self._cached: dict[str, tuple[float, int]] = {}

    # -- the hot path: counters only ---------------------------------------------------------

    def accepted(self, channel: Channel, *, duplicate: bool = False) -> None:
        """An inbound message was stored (or recognised as a platform's retry)."""
        (self._dup if duplicate else self._in)[channel.value].inc()

    def processed(self, channel: Channel, count: int = 1) -> None:
        if count:
            self._done[channel.value].inc(count)

    def sent(self, channel: Channel, count: int = 1) -> None:
        if count:
            self._out[channel.value].inc(count)

    def failed(self, channel: Channel, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else failure_reason(error)
        self.delivery_failures.labels(channel.value, reason).inc()

    def refused(self, reason: str) -> None:
        self.media_refused.labels(reason).inc()

    def acknowledged(self, channel: str, seconds: float) -> None:
        child = self._ack.get(channel)
        if child is not None:
            child.observe(seconds)

    # -- background ----------------------------------------------------------------------------

    async def watch_loop(self, every: float = LAG_EVERY) -> None:
        """Measure how late the event loop wakes from a sleep (forever; a background task).
        Work blocking the loop (a synchronous call, a CPU-heavy step) shows as lag."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(every)
            lag = max(0.0, loop.time() - start - every)
            self.loop_lag.observe(lag)
            self.loop_lag_last.set(lag)

    # -- scraping ------------------------------------------------------------------------------

    async def _read(self, name: str, gauge: Gauge) -> None:
        source = self.sources.get(name)
        if source is None:
            return
        at, value = self._cached.get(name, (float("-inf"), 0))
        if time.monotonic() - at > GAUGE_MAX_AGE:
            try:
                result = source()
                value = int(await result) if not isinstance(result, int) else result
            except Exception as error:  # the store is down: the scrape still answers
                log.warning("metrics: %s unavailable: %s", name, error)
                return
            self._cached[name] = (time.monotonic(), value)
        gauge.set(value)

    async def render(self) -> bytes:
        await self._read("inbox", self.inbox_pending)
        await self._read("outbox", self.outbox_pending)
        await self._read("running", self.running)
        await self._read("disk_free", self.disk_free)
        await self._read("disk_level", self.disk_level)
        return generate_latest(self.registry)

    async def handler(self, request: web.Request) -> web.Response:
        body = await self.render()
        response = web.Response(body=body, headers={"Cache-Control": "no-store"})
        response.content_type = CONTENT_TYPE_LATEST.split(";", 1)[0]
        response.charset = "utf-8"
        return response

    def middleware(self) -> Any:
        """An aiohttp middleware timing webhook acknowledgements (and the browser's sends)."""

        @web.middleware
        async def timed(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            channel = ack_channel(request.path)
            if channel is None or request.method != "POST":
                return await handler(request)
            start = time.perf_counter()
            try:
                return await handler(request)
            finally:
                with contextlib.suppress(Exception):
                    self.acknowledged(channel, time.perf_counter() - start)

        return timed


def ack_channel(path: str) -> str | None:
    """The channel a request acknowledges: `/webhooks/<channel>[/…]`, or the browser's
    `/chat/send` and `/chat/upload`; None for anything else."""
    if path.startswith("/webhooks/"):
        name = path[len("/webhooks/"):].split("/", 1)[0]
        return name if name in CHANNELS else None
    if path in ("/chat/send", "/chat/upload"):
        return Channel.WEBCHAT.value
    return None


__all__ = ["Metrics", "ack_channel", "failure_reason"]
