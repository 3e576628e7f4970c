"""`loa chat`: talk to the bot in the terminal, through the same pipeline and engine as `serve`.

Bot messages are printed; choices are numbered ("  1. Đăng ký") and a typed number picks one;
`/image ĐƯỜNG_DẪN` sends an image file (the same checks as the browser upload); `/quit` exits.
Works with piped stdin (each line read is echoed after "> " so a transcript reads naturally).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from adapters.console import ConsoleAdapter
from bots.bundles import MEDIA_PREFIX
from bots.images import MAX_BYTES, TOO_LARGE, ImageRejected
from bots.runtime import FlowsInvalid, Runtime
from bots.settings import Settings, SettingsError, load
from flows.vocab import Channel, ConversationKey

HELLO = (
    "Loa — trò chuyện trong cửa sổ dòng lệnh. Gõ số để chọn, "
    "/image ĐƯỜNG_DẪN để gửi ảnh, /quit để thoát."
)
QUIT = {"/quit", "/exit", "/thoat", "/thoát"}


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            chat(settings, district=args.district, user=args.user or "console",
                 stdin=sys.stdin, stdout=sys.stdout)
        )
    except FlowsInvalid as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        print("Kịch bản chưa hợp lệ, sửa các lỗi trên rồi chạy lại.", file=sys.stderr)
        return 1


async def chat(
    settings: Settings,
    *,
    district: str | None,
    user: str,
    stdin: TextIO,
    stdout: TextIO,
) -> int:
    def write(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    runtime: Runtime

    def show_image(image: str) -> str:
        if image.startswith(MEDIA_PREFIX):
            path = runtime.media.path(image[len(MEDIA_PREFIX):])
            if path is not None:
                return str(path)
        return image

    console = ConsoleAdapter(write, show_image=show_image)
    runtime = Runtime(settings, adapters={Channel.CONSOLE: console}, sweep_every=0, recover=False)
    flows = runtime.load()
    slugs = [slug for slug, _ in flows.districts]
    if not slugs:
        write("Kịch bản chưa có đơn vị nào (organisations).")
        return 1
    if district is None:
        district = slugs[0]
    elif district not in slugs:
        write(f"Không có đơn vị '{district}'. Các đơn vị: {', '.join(slugs)}")
        return 2
    key = ConversationKey(district, Channel.CONSOLE, user)
    interactive = stdin.isatty()
    loop = asyncio.get_running_loop()
    await runtime.start()
    try:
        write(HELLO)
        await runtime.pipeline.process(console.start(key))
        while True:
            if interactive:
                stdout.write("> ")
                stdout.flush()
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break  # end of input
            text = line.strip()
            if not interactive and text:
                write(f"> {text}")
            if text.lower() in QUIT:
                break
            if text.startswith("/image"):
                await _send_image(runtime, console, key, text[len("/image"):].strip(), write)
                continue
            inbound = console.line(key, text)
            if inbound is None:
                continue
            console.forget_choices(key)
            await runtime.pipeline.process(inbound)
    finally:
        await runtime.stop()
    write("Tạm biệt!")
    return 0


async def _send_image(
    runtime: Runtime,
    console: ConsoleAdapter,
    key: ConversationKey,
    raw: str,
    write: Callable[[str], None],
) -> None:
    path = Path(raw.strip("'\"")).expanduser()
    if not raw:
        write("(!) Cách dùng: /image ĐƯỜNG_DẪN_TỚI_ẢNH")
        return
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ImageRejected(TOO_LARGE)
        data = path.read_bytes()
        sha256, checked = await runtime.store_image(data)
    except ImageRejected as error:
        write(f"(!) {error}")
        return
    except OSError:
        write(f"(!) Không mở được tệp {path}.")
        return
    console.forget_choices(key)
    inbound = console.image(key, sha256, checked.mime, checked.size, path.name)
    await runtime.pipeline.process(inbound)
