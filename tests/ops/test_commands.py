"""The operator's commands against a real `loa serve` process: an online backup, /metrics,
a restore refused while the server runs and done once it stopped."""

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

from .browser import metric
from .conftest import FLOWS, REPO_ROOT, table_dump


def _post(url: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status: int = response.status
        return status


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        text: str = response.read().decode()
        return text


def test_backup_while_serving_restore_only_once_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(data_dir), LOA_CONFIG=str(FLOWS), PYTHONUNBUFFERED="1")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "bots.cli", "serve", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )

    def loa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bots.cli", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while "Loa đang chạy tại" not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        user = "commands-user-000000000"
        for n, text in enumerate(("menu", "Đăng ký", "có", "Người Sao Lưu")):
            assert _post(f"{base}/chat/send", {"user": user, "district": "tan-phu",
                                               "id": f"cmd-{n:04d}", "text": text}) == 202
        deadline = time.monotonic() + 30
        while metric(_get(f"{base}/metrics"), "loa_messages_processed_total",
                     channel="webchat") != 4.0:
            assert time.monotonic() < deadline
            time.sleep(0.2)

        online = loa("backup", "--out", str(tmp_path / "backups"))  # while the server runs
        assert online.returncode == 0, online.stderr
        assert "Đã sao lưu vào" in online.stdout and "participants 1" in online.stdout
        folder = next((tmp_path / "backups").glob("loa-backup-*"))

        refused = loa("restore", str(folder))
        assert refused.returncode == 3
        assert "Loa đang chạy trên thư mục dữ liệu này" in refused.stderr
        assert f"tiến trình {server.pid}" in refused.stderr
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert server.returncode == 0, log.read_text()
    before = table_dump(data_dir / "loa.sqlite3")

    done = loa("restore", str(folder))
    assert done.returncode == 0, done.stderr
    assert "Đã khôi phục bản sao lưu" in done.stdout and "before-restore-" in done.stdout
    restored = table_dump(data_dir / "loa.sqlite3")
    # The server wrote nothing after the backup, so the restored records are what it left.
    assert restored["participants"] == before["participants"]
    assert [row for row in restored["participants"] if "Người Sao Lưu" in str(row)]
