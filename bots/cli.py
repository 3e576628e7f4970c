"""`loa` command line. Each subcommand imports only what it needs, so `loa check` stays fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

# subcommand -> (module, function, help). The function takes the parsed arguments and returns
# the exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("bots.serve", "main", "chạy máy chủ (trò chuyện trên trình duyệt tại /)"),
    "chat": ("bots.console_chat", "main", "trò chuyện với bot ngay trong cửa sổ dòng lệnh"),
    "check": ("flows.check", "main", "kiểm tra flows.yaml, báo lỗi theo tệp:dòng:cột"),
    "graph": ("flows.graph", "main", "in sơ đồ Mermaid của một kịch bản"),
    "report": ("bots.reports.cli", "main", "báo cáo tiến độ, danh sách, cán bộ (bảng, CSV, XLSX)"),
    "organiser": ("bots.organisers", "main", "quản lý tài khoản cán bộ của bảng điều khiển"),
    "backup": ("bots.ops.cli", "main", "sao lưu dữ liệu (chạy được khi máy chủ đang chạy)"),
    "restore": ("bots.ops.cli", "main", "khôi phục dữ liệu từ một bản sao lưu"),
    "purge": ("bots.ops.cli", "main", "xóa minh chứng, thông tin cá nhân khi hết hạn lưu trữ"),
    "qr": ("bots.qr", "main", "tạo mã QR của đường dẫn mở một kịch bản trên một kênh"),
    "webhook": ("bots.webhook_cli", "main", "đặt, xem hoặc gỡ webhook của một kênh"),
    "reload": ("bots.reload_cli", "main", "kiểm tra flows.yaml rồi áp dụng cho máy chủ đang chạy"),
    "units": ("bots.units_import", "main", "nhập danh sách đơn vị từ tệp CSV hoặc Excel"),
}


def _add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "serve":
        parser.add_argument("--host", default=None, help="mặc định 127.0.0.1 (LOA_HOST)")
        parser.add_argument("--port", type=int, default=None, help="mặc định 8080 (LOA_PORT)")
        parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")
        parser.add_argument(
            "--processes", type=int, default=None,
            help="số tiến trình cùng phục vụ một cổng; >1 cần Redis (LOA_PROCESSES, mặc định 1)",
        )
    elif name == "chat":
        parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")
        parser.add_argument(
            "--district", default=None, help="mã đơn vị có kênh (mặc định: đầu tiên)"
        )
        parser.add_argument("--user", default="console", help="mã người dùng trong cuộc trò chuyện")
    elif name == "check":
        parser.add_argument("files", nargs="*", help="mặc định ./flows.yaml (LOA_CONFIG)")
    elif name == "graph":
        parser.add_argument("flow", help="mã kịch bản, ví dụ dang_ky")
        parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")
    elif name == "report":
        import_module("bots.reports.cli").add_arguments(parser)
    elif name == "organiser":
        _organiser_arguments(parser)
    elif name in ("backup", "restore", "purge"):
        import_module("bots.ops.cli").add_arguments(name, parser)
    elif name in ("qr", "webhook", "reload", "units"):
        import_module(COMMANDS[name][0]).add_arguments(parser)


def _organiser_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="VIỆC")
    add = actions.add_parser("add", help="thêm tài khoản cán bộ")
    add.add_argument("email", help="email đăng nhập")
    add.add_argument("--org", required=True, help="mã đơn vị gốc của tài khoản (trong flows.yaml)")
    add.add_argument("--role", required=True, choices=["admin", "organiser", "reviewer"],
                     help="admin: quản trị; organiser: cán bộ phụ trách; reviewer: người chấm")
    add.add_argument("--units", default="", help="người chấm: chỉ các đơn vị này (mã, dấu phẩy)")
    add.add_argument("--name", default="", help="họ tên hiển thị")
    add.add_argument("--generate", action="store_true", help="tạo mật khẩu ngẫu nhiên và in ra")
    actions.add_parser("list", help="liệt kê tài khoản")
    password = actions.add_parser("password", help="đặt mật khẩu mới cho một tài khoản")
    password.add_argument("email")
    password.add_argument("--generate", action="store_true", help="tạo mật khẩu ngẫu nhiên")
    for action, text in (("disable", "khóa tài khoản"), ("enable", "mở khóa tài khoản")):
        actions.add_parser(action, help=text).add_argument("email")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loa", description="Loa — chatbot chiến dịch Đoàn")
    sub = parser.add_subparsers(dest="command", required=True, metavar="LỆNH")
    for name, (_, _, help_text) in COMMANDS.items():
        _add_arguments(name, sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, function_name, _ = COMMANDS[args.command]
    run: Callable[[argparse.Namespace], int] = getattr(import_module(module_name), function_name)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
