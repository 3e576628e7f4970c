"""GET /metrics on the real application: the named metrics, and what one message moves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bots.ops.metrics import Metrics, ack_channel, failure_reason
from bots.runtime import Runtime
from bots.server import build_app
from bots.settings import Settings, from_env

from .browser import Browser, metric
from .conftest import FLOWS

NAMED = (  # as the text exposition's `# TYPE` lines name them
    "loa_messages_in_total",
    "loa_messages_duplicate_total",
    "loa_messages_processed_total",
    "loa_messages_out_total",
    "loa_delivery_failures_total",
    "loa_media_refused_total",
    "loa_webhook_ack_seconds",
    "loa_event_loop_lag_seconds",
    "loa_event_loop_lag_last_seconds",
    "loa_inbox_pending_conversations",
    "loa_outbox_pending_conversations",
    "loa_conversations_running",
    "loa_disk_free_bytes",
    "loa_disk_level",
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return from_env({"LOA_CONFIG": str(FLOWS), "LOA_DATA_DIR": str(tmp_path / "var")})


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], settings: Settings
) -> AsyncIterator[TestClient[Any, Any]]:
    runtime = Runtime(settings, sweep_every=0)
    yield await aiohttp_client(build_app(runtime))


async def _scrape(client: TestClient[Any, Any]) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return await response.text()


async def test_metrics_name_everything_and_count_a_processed_message(
    client: TestClient[Any, Any],
) -> None:
    before = await _scrape(client)
    for name in NAMED[:4]:
        assert metric(before, name, channel="webchat") == 0.0, name
    chat = Browser(client)
    status, _ = await chat.send(text="menu", id="m-counted-0001")
    assert status == 202
    status, body = await chat.send(text="menu", id="m-counted-0001")  # the page retried
    assert (status, body["duplicate"]) == (202, True)
    replies = await chat.replies()
    assert replies and "Bạn muốn làm gì" in replies[0]

    after = await _scrape(client)
    for name in NAMED:
        assert f"# TYPE {name} " in after, name
    assert metric(after, "loa_messages_in_total", channel="webchat") == 1.0
    assert metric(after, "loa_messages_duplicate_total", channel="webchat") == 1.0
    assert metric(after, "loa_messages_processed_total", channel="webchat") == 1.0
    assert metric(after, "loa_messages_out_total", channel="webchat") == len(replies)
    assert metric(after, "loa_messages_in_total", channel="telegram") == 0.0
    # Both sends were acknowledged and timed; nothing is waiting any more.
    assert metric(after, "loa_webhook_ack_seconds_count", channel="webchat") == 2.0
    assert metric(after, "loa_inbox_pending_conversations") == 0.0
    assert metric(after, "loa_conversations_running") == 0.0


async def test_a_blocked_event_loop_shows_as_lag() -> None:
    metrics = Metrics()
    probe = asyncio.create_task(metrics.watch_loop(every=0.05))
    await asyncio.sleep(0.12)
    time.sleep(0.3)  # a synchronous call holding the loop
    await asyncio.sleep(0.12)
    probe.cancel()
    body = (await metrics.render()).decode()
    assert (metric(body, "loa_event_loop_lag_seconds_count") or 0) >= 2
    assert (metric(body, "loa_event_loop_lag_seconds_bucket", le="0.25") or 0) < (
        metric(body, "loa_event_loop_lag_seconds_count") or 0
    )  # one probe woke more than 0.25 s late


def test_label_values_stay_a_fixed_set() -> None:
    from adapters.base import BadRequest, RecipientUnreachable, RetryLater

    assert ack_channel("/webhooks/telegram/tan-phu") == "telegram"
    assert ack_channel("/webhooks/messenger") == "messenger"
    assert ack_channel("/webhooks/anything-else") is None
    assert ack_channel("/chat/upload") == "webchat"
    assert ack_channel("/admin/login") is None
    assert failure_reason(RetryLater("x")) == "retry_later"
    assert failure_reason(RecipientUnreachable("x")) == "unreachable"
    assert failure_reason(BadRequest("x")) == "bad_request"
    assert failure_reason(ValueError("x")) == "error"
