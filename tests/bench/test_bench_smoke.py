"""The engine benchmark still runs the reference conversation correctly (never timed).

Runs 20 simulated users (plus the harness's 20 warm-up users) through the in-memory
configuration and lets the peers' ReplyCounter check every reply: eight sendMessage calls per
user, one bad-email retry, one summary byte-identical to the scenario's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bench.engine as bench_engine
from tests.required import missing

REPO = Path(__file__).resolve().parents[2]

try:
    PEER_BENCH = bench_engine.peer_bench_dir()
except FileNotFoundError as absent:  # a checkout without the shared peer benchmark
    missing(str(absent))


async def test_memory_configuration_passes_the_reply_checks() -> None:
    users, warmup = 20, 20
    result, counter = await bench_engine.run_config("loa-memory", users, warmup=warmup)
    total = users + warmup
    # run_config already ran counter.check(); assert the figures it checked, so a silently
    # skipped check would still fail here
    assert counter.send_message == 8 * total
    assert counter.bad_email == total
    assert counter.summaries == total
    assert counter.calls == {"sendMessage": 8 * total}
    scenario, _ = bench_engine.import_peer()
    for user in (0, users - 1):
        chat = scenario.BASE_USER_ID + user
        assert counter.last_text_by_chat[chat] == scenario.expected_summary(user)
    assert result["config"] == "loa-memory"
    assert result["updates"] == 8 * users
    assert result["records"] is False


def test_command_line_prints_one_json_line_per_configuration() -> None:
    env = dict(os.environ, LOA_PEER_BENCH=str(PEER_BENCH))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.engine", "--users", "20", "--warmup-users", "5",
         "--config", "loa-memory", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["config"] == "loa-memory"
    assert result["updates"] == 160
    for name in ("updates_per_s", "lat_p50_us", "lat_p99_us", "peak_rss_mb"):
        assert result[name] > 0
