"""`loa serve` on a fresh data directory, in its own process: it prints the first admin's one-time
password once; /admin works with it and asks for a new password first; a second start prints
nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from bots.supervisor import free_port

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "flows.yaml"
LINE = re.compile(
    r"Tài khoản quản trị đầu tiên: admin / mật khẩu tạm (\S+) — đăng nhập tại "
    r"(http://127\.0\.0\.1:\d+/)admin/ và đổi mật khẩu ngay"
)


def start(tmp_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(tmp_path / "var"), LOA_CONFIG=str(FLOWS), PYTHONUNBUFFERED="1",
               LOA_CHANNEL_HEALTH_EVERY="0")
    port = free_port()
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "bots.cli", "serve", "--port", str(port)],
            cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "Loa đang chạy tại" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    time.sleep(0.2)  # the admin line follows the first one
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)


def test_fresh_data_dir_prints_the_first_admin_password_once(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    process, port = start(tmp_path, log)
    try:
        found = LINE.search(log.read_text())
        assert found is not None, log.read_text()
        password, base = found.group(1), found.group(2)
        assert base == f"http://127.0.0.1:{port}/"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with opener.open(base + "admin", timeout=10) as response:  # redirected to the login
            page = response.read().decode()
            assert "/admin/login?next=" in response.url
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        form = urllib.parse.urlencode({"csrf": csrf.group(1), "login": "admin",
                                       "password": password, "next": ""}).encode()
        with opener.open(base + "admin/login", data=form, timeout=30) as response:
            # A one-time password: the first page is "change your password".
            assert response.url.endswith("/admin/password")
            assert "Mật khẩu mới" in response.read().decode()
    finally:
        stop(process)
    assert process.returncode == 0

    again = tmp_path / "again.log"
    process, _ = start(tmp_path, again)
    stop(process)
    assert "Tài khoản quản trị đầu tiên" not in again.read_text()
