"""`loa qr`: a district's deep link into a flow, as a printable QR code (PNG or SVG).

    loa qr --district tan-phu --channel messenger --flow cong_dan_so
    loa qr --district tan-phu --channel telegram --flow huong_dan_vneid --ref can-bo-an \\
           --out vneid-an.svg

The link comes from flows.yaml: the district's `links:` (which ref opens the flow, and which
cadre code it credits) and its channel config (Page id, OA id, ...); see bots/links.py. For
Telegram the bot's username is `username:` in the channel config, `--bot`, or asked of the Bot
API (getMe) with the district's token. Prints the link; exit code 1 with a clear message when
the link cannot be made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bots.links import DeepLink, LinkError, build, choose_ref
from flows.vocab import Channel

CHANNELS = ("messenger", "telegram", "zalo", "zalobot", "webchat")
_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--district", required=True, help="mã đơn vị có kênh (trong flows.yaml)")
    parser.add_argument("--channel", required=True, choices=CHANNELS, help="kênh của đường dẫn")
    parser.add_argument("--flow", required=True, help="mã kịch bản đường dẫn mở, ví dụ dang_ky")
    parser.add_argument("--ref", default=None, help="mã cán bộ được ghi công (tùy chọn)")
    parser.add_argument("--out", default=None, help="tệp .png hoặc .svg (mặc định qr-....png)")
    parser.add_argument("--bot", default=None, help="tên bot Telegram, nếu flows.yaml không có")
    parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")


def secret(options: Mapping[str, Any], name: str, env: Mapping[str, str]) -> str | None:
    """A `$VAR` option read from the environment (None when absent)."""
    match = _VAR.match(str(options.get(name) or "").strip())
    if match is None:
        return None
    return env.get(match.group(1), "").strip() or None


async def telegram_username(token: str, api: str) -> str:
    from adapters.telegram_transport import make_transport

    transport = make_transport(token, api_base=api, timeout=10)
    try:
        reply = await transport.call("getMe", {})
    finally:
        await transport.close()
    result = reply.get("result") if reply.get("ok") else None
    username = result.get("username") if isinstance(result, dict) else None
    if not isinstance(username, str) or not username:
        raise LinkError(
            f"Không hỏi được tên bot Telegram (getMe): {reply.get('description') or 'lỗi không rõ'}"
        )
    return username


def make_link(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> DeepLink:
    """The link `loa qr` encodes (raises LinkError, FlowsInvalid, SettingsError)."""
    from bots.runtime import load_flows
    from bots.settings import load

    env = os.environ if env is None else env
    settings = load(args, env)
    flows = load_flows(settings.config)
    district = flows.compiled.districts.get(args.district)
    if district is None:
        known = ", ".join(flows.compiled.districts) or "(chưa có)"
        raise LinkError(f"Không có đơn vị '{args.district}' có kênh. Các đơn vị: {known}.")
    channel = Channel(args.channel)
    options = dict(flows.channels).get(district.slug, {}).get(channel.value)
    if channel is Channel.WEBCHAT:
        if district.slug not in {slug for slug, _ in flows.webchat}:
            raise LinkError(f"Đơn vị '{district.slug}' không mở trò chuyện trên web.")
        options = options or {}
    elif options is None:
        raise LinkError(
            f"Đơn vị '{district.slug}' chưa khai báo kênh {channel.value} trong flows.yaml."
        )
    ref, code = choose_ref(district.links, flows.compiled.flows, district.slug, args.flow, args.ref)
    username = getattr(args, "bot", None)
    if channel is Channel.TELEGRAM and not username:
        username = str(options.get("username") or "") or None
        if username is None:
            token = secret(options, "token", env)
            if token is None:
                raise LinkError(
                    f"Chưa biết tên bot Telegram của đơn vị '{district.slug}': thêm username: vào "
                    "kênh telegram, dùng --bot, hoặc đặt biến môi trường chứa token."
                )
            username = asyncio.run(telegram_username(token, settings.telegram_api))
    if channel is Channel.WEBCHAT and not settings.public_url:
        print(
            f"Lưu ý: chưa đặt LOA_PUBLIC_URL, đường dẫn dùng {settings.base_url} (chỉ mở được "
            "trên máy này).",
            file=sys.stderr,
        )
    return build(
        channel,
        district.slug,
        args.flow,
        ref,
        options,
        public_url=settings.base_url,
        telegram_username=username,
        code=code,
    )


def write_qr(url: str, out: Path) -> None:
    """PNG or SVG by the file's suffix (error correction M: survives a smudged poster)."""
    import segno

    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise LinkError(f"Tệp '{out}' phải có đuôi .png hoặc .svg.")
    code = segno.make(url, error="m", micro=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    code.save(str(out), scale=10 if suffix == ".png" else 8, border=4)


def main(args: argparse.Namespace) -> int:
    from bots.runtime import FlowsInvalid
    from bots.settings import SettingsError

    try:
        link = make_link(args)
        out = Path(args.out or f"qr-{link.district}-{link.channel.value}-{link.ref}.png")
        write_qr(link.url, out)
    except FlowsInvalid as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        print("flows.yaml chưa hợp lệ nên chưa tạo được mã QR.", file=sys.stderr)
        return 1
    except (LinkError, SettingsError, OSError) as error:
        print(f"Lỗi: {error}", file=sys.stderr)
        return 1
    print(f"Đường dẫn: {link.url}")
    if link.text:
        print(f"Sau khi mở, người dùng gửi: {link.text}")
    credited = f", ghi công cho mã cán bộ {link.code}" if link.code else ""
    print(f"Mở kịch bản: {link.flow} (mã liên kết {link.ref}{credited})")
    print(f"Mã QR: {out}")
    return 0


__all__ = ["add_arguments", "main", "make_link", "telegram_username", "write_qr"]
