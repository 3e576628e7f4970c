"""`loa backup`, `loa restore`, `loa purge`: arguments and entry points.

Light on purpose: `bots/cli.py` imports this module to build its parser, so it imports only
argparse here and each command's module when that command runs.
"""

from __future__ import annotations

import argparse
from importlib import import_module

COMMANDS: dict[str, tuple[str, str]] = {
    "backup": ("bots.ops.backup", "sao lưu dữ liệu (chạy được khi máy chủ đang chạy)"),
    "restore": ("bots.ops.restore", "khôi phục dữ liệu từ một bản sao lưu"),
    "purge": ("bots.ops.purge", "xóa minh chứng và thông tin cá nhân khi hết hạn lưu trữ"),
}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")
    if name == "backup":
        parser.add_argument(
            "--out", default=None,
            help="thư mục chứa các bản sao lưu (mặc định: backups/ cạnh LOA_DATA_DIR)",
        )
        parser.add_argument("--tar", action="store_true", help="đóng gói thành một tệp .tar")
    elif name == "restore":
        parser.add_argument("backup", help="thư mục loa-backup-… hoặc tệp .tar")
        parser.add_argument(
            "--force", action="store_true",
            help="khôi phục cả khi Loa đang chạy trên thư mục dữ liệu (không nên)",
        )
    elif name == "purge":
        parser.add_argument("--campaign", required=True, help="mã chiến dịch trong flows.yaml")
        parser.add_argument(
            "--dry-run", action="store_true", help="chỉ cho biết sẽ xóa những gì"
        )
        parser.add_argument(
            "--force", action="store_true", help="xóa cả khi chưa hết thời hạn lưu trữ"
        )


def main(args: argparse.Namespace) -> int:
    module, _ = COMMANDS[args.command]
    run = import_module(module).main
    code: int = run(args)
    return code


__all__ = ["COMMANDS", "add_arguments", "main"]
