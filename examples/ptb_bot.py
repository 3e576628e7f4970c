"""Một bot python-telegram-bot có sẵn lệnh riêng (/gioithieu), mọi tin khác do Loa trả lời.

    export TELEGRAM_BOT_TOKEN=123456789:AAE...     # mã bot từ @BotFather
    export LOA_DISTRICT=tan-phu                    # mã đơn vị trong flows.yaml
    export LOA_CONFIG=flows.yaml LOA_DATA_DIR=var  # như `loa serve`
    uv run --extra ptb python examples/ptb_bot.py
    # máy chủ Bot API khác (máy chủ riêng, proxy, hay máy giả lập khi thử):
    uv run --extra ptb python examples/ptb_bot.py --base-url http://127.0.0.1:8081

The application is an ordinary PTB Application: its own /gioithieu handler answers that command,
and `LoaBridge.install` puts Loa in front of it for everything else (docs/kenh-telegram.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from telegram import Update
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes

from bots.ptb_bridge import BridgeError, LoaBridge
from bots.runtime import FlowsInvalid

App = Application[Any, Any, Any, Any, Any, Any]
GIOI_THIEU = (
    "Đây là bot của Đoàn Thanh niên. Gõ /start để bắt đầu, hoặc nhắn \"menu\" để xem các việc "
    "bot giúp được bạn."
)


async def gioithieu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The district's own command: answered by PTB, never seen by Loa."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(GIOI_THIEU)


def build(token: str, district: str, *, base_url: str | None, web: bool) -> App:
    builder = ApplicationBuilder().token(token)
    if base_url:
        root = base_url.rstrip("/")
        builder = builder.base_url(f"{root}/bot").base_file_url(f"{root}/file/bot")
    application = builder.build()
    application.add_handler(CommandHandler("gioithieu", gioithieu))
    bridge = LoaBridge(district, web=web)

    async def ready(app: App) -> None:  # runs after Loa has started (install chains it)
        print(f"Bot @{app.bot.username} đang chạy; Loa trả lời cho đơn vị {district}.", flush=True)
        if bridge.web_url:
            print(f"Bảng điều khiển: {bridge.web_url}admin/", flush=True)
            password = bridge.runtime.first_admin_password
            if password:  # shown once, as `loa serve` does
                print(f"Tài khoản quản trị đầu tiên: admin / mật khẩu tạm {password}", flush=True)
                bridge.runtime.first_admin_password = None

    application.post_init = ready
    bridge.install(application)
    return application


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Bot python-telegram-bot có lệnh /gioithieu riêng, mọi tin khác do Loa trả lời."
    )
    parser.add_argument(
        "--base-url", default=os.environ.get("TELEGRAM_API_URL"),
        help="máy chủ Bot API (mặc định https://api.telegram.org; TELEGRAM_API_URL)",
    )
    parser.add_argument(
        "--no-web", action="store_true",
        help="không mở bảng điều khiển của Loa (LOA_HOST:LOA_PORT)",
    )
    args = parser.parse_args(argv)
    token = os.environ.get("TELEGRAM_BOT_TOKEN", "").strip()
    district = os.environ.get("LOA_DISTRICT", "").strip()
    if not token or not district:
        print("Cần đặt biến môi trường TELEGRAM_BOT_TOKEN và LOA_DISTRICT.", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request URL at INFO, and a Bot API URL contains the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    application = build(token, district, base_url=args.base_url, web=not args.no_web)
    try:
        application.run_polling(allowed_updates=Update.ALL_TYPES)
    except FlowsInvalid as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        return 1
    except BridgeError as error:
        print(error, file=sys.stderr)
        return 1
    print("Bot đã dừng.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
