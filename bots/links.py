"""Deep links into a district's flows, per channel (what `loa qr` prints and encodes).

A link carries a *ref* ([A-Za-z0-9_-], at most 64 characters: Telegram's `start` rule, the
strictest) that the engine resolves through the district's `links:` in flows.yaml (a ref naming
a flow directly also opens it):

    messenger  https://m.me/<page>?ref=<ref>            (Get Started keeps the ref: loa webhook set)
    telegram   https://t.me/<bot username>?start=<ref>
    zalo       https://zalo.me/<oa id> + the text "#<ref>" the person sends (the OA has no ref)
    zalobot    the bot's link from the channel config (`link:`) + the text "#<ref>"
    webchat    <LOA_PUBLIC_URL>/?d=<district>&ref=<ref>

Nothing here does I/O: the Telegram username, when flows.yaml does not give it, is looked up
by the caller (bots/qr.py asks the Bot API's getMe).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from flows.vocab import Channel

REF = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{3,31}")


class LinkError(ValueError):
    """The link cannot be made as asked (Vietnamese, for the operator)."""


@dataclass(frozen=True, slots=True)
class DeepLink:
    channel: Channel
    district: str
    flow: str
    ref: str
    url: str  # what the QR code holds
    text: str | None = None  # what the person sends after opening it (Zalo), if anything
    code: str | None = None  # the cadre referral code credited for entries by this link


def check_ref(ref: str, what: str = "mã liên kết") -> str:
    if not REF.fullmatch(ref):
        raise LinkError(
            f"{what} '{ref}' không hợp lệ: chỉ gồm A-Z, a-z, 0-9, _ và -, tối đa 64 ký tự."
        )
    return ref


def choose_ref(
    links: Mapping[str, Any], flows: Mapping[str, Any], district: str, flow: str, code: str | None
) -> tuple[str, str | None]:
    """The ref that opens `flow` in the district (and credits `code`), with the code it
    credits. `links` maps ref → compiled link (`.flow`, `.code`), in file order."""
    if flow not in flows:
        near = difflib.get_close_matches(flow, list(flows), n=3)
        hint = f" Có phải: {', '.join(near)}?" if near else ""
        raise LinkError(f"Không có kịch bản '{flow}' trong flows.yaml.{hint}")
    if code is not None:
        check_ref(code, "mã cán bộ (--ref)")
        link = links.get(code)
        if link is not None and link.flow == flow:
            return code, link.code
        for ref, link in links.items():
            if link.flow == flow and link.code == code:
                return ref, code
        raise LinkError(
            f"Đơn vị '{district}' chưa có liên kết nào mở kịch bản '{flow}' với mã cán bộ "
            f"'{code}'. Thêm vào mục links của đơn vị trong flows.yaml:\n"
            f"  {flow}-{code}:\n    flow: {flow}\n    ref: {code}"
        )
    for ref, link in links.items():
        if link.flow == flow and link.code is None:
            return ref, None
    if REF.fullmatch(flow):
        return flow, None  # the engine opens a flow whose id is the ref
    raise LinkError(
        f"Kịch bản '{flow}' chưa có liên kết trong đơn vị '{district}'; thêm một mục vào links "
        f"(ví dụ  dang-ky: {flow})."
    )


def build(
    channel: Channel,
    district: str,
    flow: str,
    ref: str,
    options: Mapping[str, Any],
    *,
    public_url: str = "",
    telegram_username: str | None = None,
    code: str | None = None,
) -> DeepLink:
    """The deep link for one channel of the district. `options` is the district's channel
    config as written in flows.yaml (only non-secret keys are read here)."""
    check_ref(ref)
    text: str | None = None
    if channel is Channel.MESSENGER:
        page = str(options.get("page_username") or options.get("page_id") or "").strip()
        if not page:
            raise LinkError(f"Kênh messenger của đơn vị '{district}' thiếu page_id.")
        url = f"https://m.me/{quote(page, safe='')}?{urlencode({'ref': ref})}"
    elif channel is Channel.TELEGRAM:
        username = (telegram_username or "").lstrip("@")
        if not _USERNAME.fullmatch(username):
            raise LinkError(
                f"Chưa biết tên bot Telegram của đơn vị '{district}' (thêm username: vào kênh "
                "telegram trong flows.yaml, hoặc dùng --bot)."
            )
        url = f"https://t.me/{username}?{urlencode({'start': ref})}"
    elif channel is Channel.ZALO:
        oa_id = str(options.get("oa_id") or "").strip()
        if not oa_id:
            raise LinkError(f"Kênh zalo của đơn vị '{district}' thiếu oa_id.")
        url, text = f"https://zalo.me/{quote(oa_id, safe='')}", f"#{ref}"
    elif channel is Channel.ZALOBOT:
        link = str(options.get("link") or "").strip()
        if not link.startswith(("https://", "http://")):
            raise LinkError(
                f"Kênh zalobot của đơn vị '{district}' chưa có link: (đường dẫn mở bot trong "
                "Zalo, lấy từ Zalo Bot Manager); thêm link: https://zalo.me/... vào flows.yaml."
            )
        url, text = link, f"#{ref}"
    elif channel is Channel.WEBCHAT:
        base = public_url.rstrip("/")
        if not base:
            raise LinkError("Chưa đặt LOA_PUBLIC_URL (địa chỉ công khai của Loa).")
        url = f"{base}/?{urlencode({'d': district, 'ref': ref})}"
    else:
        raise LinkError(f"Kênh {channel.value} không có đường dẫn để mở.")
    return DeepLink(channel, district, flow, ref, url, text, code)


__all__ = ["REF", "DeepLink", "LinkError", "build", "check_ref", "choose_ref"]
