"""Regression: a full garbage collection walked everything loaded at start-up (flows, SQLAlchemy
and aiogram models, compiled machines) and paused the event loop for ~0.1–0.3 s, which was the
whole tail of webhook acknowledgement latency in the soak (ack p99 ~280 ms at 500 msg/s, 51 ms
once frozen). `serve` now freezes what start-up created."""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

from bots.runtime import Runtime
from bots.server import serve
from bots.settings import from_env

from .conftest import REPO_ROOT


async def test_start_up_objects_are_frozen_out_of_the_collector(tmp_path: Path) -> None:
    settings = from_env(
        {"LOA_CONFIG": str(REPO_ROOT / "flows.yaml"), "LOA_DATA_DIR": str(tmp_path / "var")}
    )
    gc.unfreeze()
    frozen: list[int] = []

    def ready(url: str) -> None:
        frozen.append(gc.get_freeze_count())
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler stops it gracefully

    try:
        await serve(Runtime(settings), "127.0.0.1", 0, ready)
    finally:
        gc.unfreeze()
    assert frozen and frozen[0] > 100_000  # the loaded application, not a handful of objects
