"""`loa reload` and SIGHUP against a real `loa serve` process (SQLite, no Redis: the server
finds a published version by polling the records)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from bots.supervisor import free_port
from tests.console_flows.test_reload import BROKEN, write

REPO = Path(__file__).resolve().parents[2]


def _served(base: str) -> str:
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
        version: str = orjson.loads(response.read())["flows"]
        return version


def _until_served(base: str, version: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while _served(base) != version:
        assert time.monotonic() < deadline, f"server still on {_served(base)}"
        time.sleep(0.1)


def test_loa_reload_and_sighup_switch_a_running_server(tmp_path: Path) -> None:
    config = write(tmp_path / "conf" / "flows.yaml", "Câu hai?")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(tmp_path / "var"), LOA_CONFIG=str(config), LOA_PORT=str(port),
               PYTHONUNBUFFERED="1")
    log = tmp_path / "serve.log"
    with log.open("w") as handle:
        server = subprocess.Popen([sys.executable, "-m", "bots.cli", "serve"], cwd=REPO,
                                  env=env, stdout=handle, stderr=subprocess.STDOUT)

    def loa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bots.cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while "Loa đang chạy tại" not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        first = _served(base)

        # loa reload: checks, publishes, and waits until this machine's server has it.
        write(config, "Câu hai (bản 2)?")
        done = loa("reload", "--wait", "20")
        assert done.returncode == 0, done.stderr + done.stdout
        second = _served(base)
        assert second != first
        assert f"đã công bố phiên bản {second[:12]}" in done.stdout
        assert f"đang chạy phiên bản {second[:12]}" in done.stdout

        # A broken file: refused with its position, exit 1, the server keeps its version.
        config.write_text(BROKEN, encoding="utf-8")
        refused = loa("reload", "--wait", "0")
        assert refused.returncode == 1
        assert f"{config}:12:15: " in refused.stderr and "khong_co" in refused.stderr
        assert "KHÔNG được áp dụng" in refused.stderr
        time.sleep(3.5)  # longer than the server's poll
        assert _served(base) == second

        # SIGHUP: the server reloads by itself; a broken file is refused in its log.
        server.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert server.poll() is None and _served(base) == second
        assert "khong_co" in log.read_text()
        write(config, "Câu hai (bản 3)?")
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _served(base) in (first, second):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert server.returncode == 0, log.read_text()
