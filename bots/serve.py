"""`loa serve`: load and check the flows, prepare storage, run the web server until stopped.

Works on a fresh clone with nothing configured: SQLite under ./var (schema created by Alembic at
start), the browser chat at http://127.0.0.1:8080/. A flows file that does not pass check is
never served: its problems are printed as `file:line:column: message` and the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable

from bots.runtime import FlowsInvalid, Runtime
from bots.settings import Settings, SettingsError, load

log = logging.getLogger("loa.serve")


def event_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed and not turned off (LOA_UVLOOP=0): the same asyncio API with the
    loop, sockets and timers in C (the soak: 2.85 → 2.63 ms of server CPU per message).
    None: the standard loop."""
    if not settings.uvloop:
        return None
    try:
        import uvloop
    except ImportError:  # not installed (Windows has none): the standard loop serves as well
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # transitions logs every callback at INFO: far too much for an operator's terminal.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    runtime = Runtime(settings)
    try:
        flows = runtime.load()
    except FlowsInvalid as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        print(f"{settings.config}: kịch bản chưa hợp lệ nên máy chủ không chạy. Sửa các lỗi trên "
              "rồi chạy lại (kiểm tra nhanh: uv run loa check).", file=sys.stderr)
        return 1
    log.info("flows %s (version %s), %d districts", settings.config, flows.version[:12],
             len(flows.districts))

    if settings.processes > 1 and settings.process_index is None:
        if not settings.redis_url:
            print(
                f"Chạy {settings.processes} tiến trình cần Redis để các tiến trình dùng chung "
                "hộp thư và phiên trò chuyện: đặt LOA_REDIS_URL (ví dụ redis://127.0.0.1:6379/0) "
                "hoặc bỏ --processes.",
                file=sys.stderr,
            )
            return 2
        from bots.supervisor import supervise

        return supervise(settings)

    def ready(url: str) -> None:
        if not settings.process_index:  # one line for the deployment, not one per process
            print(f"Loa đang chạy tại {url} — mở trình duyệt để trò chuyện", flush=True)
        password = runtime.first_admin_password
        if password:
            # Shown once: only its hash is stored, and the first login must change it.
            print(
                f"Tài khoản quản trị đầu tiên: admin / mật khẩu tạm {password} — đăng nhập tại "
                f"{url}admin/ và đổi mật khẩu ngay",
                flush=True,
            )
            runtime.first_admin_password = None

    from bots.server import serve

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
            runner.run(
                serve(
                    runtime, settings.host, settings.port, ready,
                    reuse_port=settings.processes > 1,
                )
            )
    except OSError as error:
        print(f"Không mở được máy chủ tại {settings.host}:{settings.port}: {error}",
              file=sys.stderr)
        return 1
    except Exception as error:  # storage unreachable, database refused the migration, ...
        log.exception("start-up failed")
        print(f"Loa không khởi động được: {error}", file=sys.stderr)
        return 1
    if settings.process_index is None:
        print("Loa đã dừng.", flush=True)
    return 0
