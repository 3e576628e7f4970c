"""Certificates and badges drawn with Pillow; in a process pool.

`render_certificate(CertificateData) -> RenderedCertificate` and `render_badge(BadgeData) -> bytes`
are pure CPU work on picklable values: they run in the worker processes of a
`CertificateRenderer` (never on the event loop). The certificate is A4 landscape at 150 dpi
(1754 × 1240 pixels); its PDF is that raster on one A4 page (no vector PDF library is installed;
at 150 dpi the text prints cleanly). The badge is a round medal of `size` × `size` pixels (600 by
default) with the person's name on a ribbon.

Every text is NFC-normalised and drawn with the shipped Noto Serif (fonts/, SIL OFL 1.1), which
covers every Vietnamese letter with its stacked marks. A text with a character the font lacks
(an emoji in a name) is refused with `CertificateError` rather than printed as a box. The name is
printed exactly as the participant confirmed it (only spaces are tidied): it shrinks to fit the
page and, past a minimum size, breaks onto two lines; it is never cut.

The pool uses the `forkserver` start method like `bots.media.inspect.InspectPool` (whose shape
this copies rather than imports: that pool preloads the media modules into the fork server,
this one preloads this module): workers never inherit the server's database and Redis threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import io
import logging
import math
import multiprocessing
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import segno
from PIL import Image, ImageChops, ImageDraw, ImageFont, UnidentifiedImageError

log = logging.getLogger("loa.certificates")

T = TypeVar("T")

FONTS = Path(__file__).parent / "fonts"
Style = Literal["regular", "bold", "italic", "bolditalic"]
_FONT_FILES: dict[Style, str] = {
    "regular": "NotoSerif-Regular.ttf",
    "bold": "NotoSerif-Bold.ttf",
    "italic": "NotoSerif-Italic.ttf",
    "bolditalic": "NotoSerif-BoldItalic.ttf",
}

# A4 landscape at 150 dpi.
DPI = 150
PAGE = (1754, 1240)

# Colours of the Ho Chi Minh Communist Youth Union's emblem, and paper and ink.
BLUE = (0, 84, 166)  # #0054A6
DEEP_BLUE = (0, 52, 110)
RED = (218, 37, 29)  # #DA251D
GOLD = (196, 154, 44)
LIGHT_GOLD = (232, 204, 128)
PAPER = (255, 252, 243)
INK = (34, 38, 48)

# Where things go on the certificate (pixels at 150 dpi). The frame's inner gold line is at
# FRAME_INSET; text keeps TEXT_MARGIN from the page edge.
FRAME_INSET = 66
TEXT_MARGIN = 130
NAME_BAND = (436, 592)  # top and bottom of the band the name is fitted into
NAME_MAX_SIZE = 96
NAME_MIN_SIZE = 50  # below this a long name breaks onto two lines
QR_MODULES_PX = 170  # the QR code's target width (quiet zone excluded)

MAX_TEXT = 300  # characters in any one text field
MAX_URL = 500
MAX_SIGNATURE_BYTES = 4 * 2**20
MAX_SIGNATURE_PIXELS = 16_000_000


class CertificateError(ValueError):
    """The data cannot be printed as given; the message (Vietnamese) says what to fix."""


@dataclass(frozen=True, slots=True)
class CertificateData:
    """What one certificate shows. `name` exactly as the participant confirmed it.

    `signer_title` may hold several lines ("TM. BAN THƯỜNG VỤ\\nBÍ THƯ"); `signature_png` is an
    optional scanned signature (PNG with transparency, or a JPEG/PNG on white paper)."""

    name: str
    unit: str
    campaign: str  # the campaign's title: 'Thử thách "Công dân số" năm 2023'
    issued_on: dt.date
    organisation: str  # who issues it: "Quận Đoàn Tân Phú"
    serial: str
    verify_url: str  # encoded in the QR code
    place: str = "TP. Hồ Chí Minh"  # "TP. Hồ Chí Minh, ngày 15 tháng 10 năm 2023"
    signer_title: str = ""
    signer_name: str = ""
    header: str = "ĐOÀN TNCS HỒ CHÍ MINH"  # the line above the organisation
    title: str = "GIẤY CHỨNG NHẬN"
    lead: str = "Trân trọng chứng nhận"  # the line above the name
    achievement: str = "Đã hoàn thành"  # the line above the campaign's title
    badge_title: str = "CÔNG DÂN SỐ"  # the medal drawn beside the signature; "" for none
    signature_png: bytes | None = None


@dataclass(frozen=True, slots=True)
class RenderedCertificate:
    png: bytes  # 1754 × 1240, 150 dpi
    pdf: bytes  # one A4 landscape page

    @property
    def size(self) -> tuple[int, int]:
        return PAGE


@dataclass(frozen=True, slots=True)
class BadgeData:
    """The digital badge: a round medal with `title` and `year`, the person's name on a ribbon
    and `organisation` around the ring."""

    name: str
    year: int
    title: str = "CÔNG DÂN SỐ"
    organisation: str = "ĐOÀN TNCS HỒ CHÍ MINH"
    size: int = 600
    transparent: bool = False  # a transparent background instead of white


# -- text helpers --------------------------------------------------------------------------------


@functools.cache
def font(style: Style, size: int) -> ImageFont.FreeTypeFont:
    """The shipped Noto Serif in `style` at `size` pixels (cached per process)."""
    return ImageFont.truetype(str(FONTS / _FONT_FILES[style]), size)


def tidy(text: str) -> str:
    """NFC, no control characters, runs of white space as one space, trimmed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c).startswith(("C", "Z")) else c for c in text)
    return re.sub(r" {2,}", " ", text).strip()


def smart_quotes(text: str) -> str:
    """Straight double quotes in pairs as typographic ones: "Công dân số" → “Công dân số”."""
    out: list[str] = []
    opening = True
    for char in text:
        if char == '"':
            out.append("“" if opening else "”")
            opening = not opening
        else:
            out.append(char)
    return "".join(out)


@functools.cache
def _notdef(style: Style) -> bytes:
    mask = font(style, 24).getmask("\ue000")  # a private-use code point no font maps
    return bytes(mask)


@functools.cache
def has_glyph(char: str, style: Style = "regular") -> bool:
    """Whether the shipped font draws `char` (rather than its .notdef box)."""
    if unicodedata.category(char).startswith("Z"):
        return True
    mask = font(style, 24).getmask(char)
    return mask.getbbox() is not None and bytes(mask) != _notdef(style)


def unsupported_characters(text: str, styles: Sequence[Style] = ("regular", "bold")) -> str:
    """The characters of `text` (after `tidy`) the shipped font cannot draw, each once."""
    missing = dict.fromkeys(
        c for c in tidy(text) if not all(has_glyph(c, style) for style in styles)
    )
    return "".join(missing)


def vietnamese_date(place: str, day: dt.date) -> str:
    """The date line, "TP. Hồ Chí Minh, ngày 05 tháng 10 năm 2023": days below 10 and the
    months January and February take a leading zero, as Vietnamese administrative documents
    write them. Without a place: "Ngày 05 tháng 10 năm 2023"."""
    month = f"{day.month:02d}" if day.month <= 2 else str(day.month)
    text = f"ngày {day.day:02d} tháng {month} năm {day.year}"
    return f"{place}, {text}" if place else text[0].upper() + text[1:]


def _width(text: str, face: ImageFont.FreeTypeFont) -> float:
    return face.getlength(text)


def _fit_size(text: str, style: Style, max_size: int, min_size: int, width: float) -> int:
    """The largest size in [min_size, max_size] at which `text` is at most `width` wide (or
    min_size when none is)."""
    size = max_size
    while size > min_size and _width(text, font(style, size)) > width:
        size -= 2
    return max(size, min_size)


def _wrap(text: str, face: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        trial = f"{current} {word}".strip()
        if current and _width(trial, face) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def _balanced_split(text: str, face: ImageFont.FreeTypeFont) -> tuple[str, str] | None:
    """Two lines of `text` split at the space that makes the longer line shortest."""
    words = text.split(" ")
    if len(words) < 2:
        return None
    best: tuple[float, str, str] | None = None
    for i in range(1, len(words)):
        first, second = " ".join(words[:i]), " ".join(words[i:])
        longest = max(_width(first, face), _width(second, face))
        if best is None or longest < best[0]:
            best = (longest, first, second)
    assert best is not None
    return best[1], best[2]


def _spaced(
    draw: ImageDraw.ImageDraw,
    text: str,
    face: ImageFont.FreeTypeFont,
    centre_x: float,
    baseline: float,
    fill: tuple[int, ...],
    tracking: float,
) -> None:
    """Centred text with extra space between letters (for titles in capitals)."""
    widths = [_width(c, face) for c in text]
    total = sum(widths) + tracking * (len(text) - 1)
    x = centre_x - total / 2
    for char, width in zip(text, widths, strict=True):
        draw.text((x, baseline), char, font=face, fill=fill, anchor="ls")
        x += width + tracking


# -- validation ----------------------------------------------------------------------------------


def _check_text(label: str, text: str, *, required: bool = True) -> str:
    value = tidy(text) if isinstance(text, str) else ""
    if required and not value:
        raise CertificateError(f"Thiếu {label}.")
    if len(value) > MAX_TEXT:
        raise CertificateError(f"{label.capitalize()} quá dài (tối đa {MAX_TEXT} ký tự).")
    missing = unsupported_characters(value)
    if missing:
        raise CertificateError(
            f"{label.capitalize()} có ký tự không in được: {' '.join(missing)} — "
            "hãy sửa lại rồi cấp giấy chứng nhận."
        )
    return value


def _check_url(url: str) -> str:
    value = url.strip() if isinstance(url, str) else ""
    if not re.fullmatch(r"https?://[^\s]+", value) or len(value) > MAX_URL:
        raise CertificateError("Địa chỉ xác minh phải là một URL http(s) hợp lệ.")
    return value


# -- the certificate -----------------------------------------------------------------------------


def render_certificate(data: CertificateData) -> RenderedCertificate:
    """The certificate as PNG and PDF. Raises `CertificateError` for data it cannot print."""
    name = _check_text("họ tên", data.name)
    unit = _check_text("đơn vị", data.unit, required=False)
    campaign = smart_quotes(_check_text("tên chiến dịch", data.campaign))
    organisation = _check_text("tên đơn vị cấp", data.organisation)
    serial = _check_text("số hiệu", data.serial)
    header = _check_text("dòng tiêu ngữ", data.header, required=False)
    title = _check_text("tiêu đề", data.title)
    lead = _check_text("lời dẫn", data.lead, required=False)
    achievement = _check_text("nội dung", data.achievement, required=False)
    place = _check_text("địa danh", data.place, required=False)
    signer_name = _check_text("tên người ký", data.signer_name, required=False)
    signer_lines = [
        _check_text("chức danh người ký", line, required=False)
        for line in (data.signer_title or "").splitlines()
    ]
    signer_lines = [line for line in signer_lines if line]
    badge_title = _check_text("tên huy hiệu", data.badge_title, required=False)
    url = _check_url(data.verify_url)
    if not isinstance(data.issued_on, dt.date):
        raise CertificateError("Thiếu ngày cấp.")

    width = PAGE[0]
    image = _certificate_background().copy()
    draw = ImageDraw.Draw(image)
    cx = width / 2
    usable = width - 2 * TEXT_MARGIN

    # Header: the union's name, the issuing organisation, a gold rule.
    if header:
        face = font("bold", _fit_size(header.upper(), "bold", 30, 20, usable))
        _spaced(draw, header.upper(), face, cx, 142, DEEP_BLUE, 3)
    org = organisation.upper()
    face = font("bold", _fit_size(org, "bold", 38, 22, usable))
    draw.text((cx, 194), org, font=face, fill=BLUE, anchor="ms")
    _rule(draw, cx, 224, 150)

    # Title.
    face = font("bold", _fit_size(title.upper(), "bold", 104, 48, usable - 120))
    _spaced(draw, title.upper(), face, cx, 345, RED, 6)

    if lead:
        draw.text((cx, 418), lead, font=font("italic", 36), fill=INK, anchor="ms")

    _draw_name(draw, name)

    y = 648
    if unit:
        label, value = "Đơn vị: ", unit
        size = _fit_size(label + value, "bold", 36, 22, usable)
        regular, bold = font("regular", size), font("bold", size)
        total = _width(label, regular) + _width(value, bold)
        x = cx - total / 2
        draw.text((x, y), label, font=regular, fill=INK, anchor="ls")
        draw.text((x + _width(label, regular), y), value, font=bold, fill=INK, anchor="ls")
        y += 58
    if achievement:
        draw.text((cx, y), achievement, font=font("italic", 34), fill=INK, anchor="ms")
        y += 60
    size = _fit_size(campaign, "bold", 46, 30, usable)
    face = font("bold", size)
    for line in _wrap(campaign, face, usable)[:2]:
        draw.text((cx, y), line, font=face, fill=BLUE, anchor="ms")
        y += round(size * 1.3)

    _draw_qr(image, draw, url, serial)
    _draw_signature_block(
        image,
        draw,
        vietnamese_date(place, data.issued_on),
        signer_lines,
        signer_name,
        data.signature_png,
    )
    if badge_title:
        medal = _medal(badge_title, data.issued_on.year, organisation.upper(), 250, None)
        image.paste(medal, (round(cx - 125), 880), medal)

    png = io.BytesIO()
    image.save(png, "PNG", dpi=(DPI, DPI), optimize=False)
    pdf = io.BytesIO()
    issued = dt.datetime.combine(data.issued_on, dt.time(), tzinfo=dt.UTC)
    image.save(
        pdf,
        "PDF",
        resolution=DPI,
        quality=92,
        subsampling=0,  # 4:4:4: no colour bleeding around red and blue letters
        title=f"{title} – {name}",
        author=organisation,
        subject=campaign,
        creator="Loa",
        # The date of issue, not the clock: the same certificate always gives the same file.
        creationDate=issued.timetuple(),
        modDate=issued.timetuple(),
    )
    return RenderedCertificate(png=png.getvalue(), pdf=pdf.getvalue())


def _name_lines(name: str, width: float) -> tuple[list[str], int]:
    """The name's lines and size: one line shrunk to fit, else two balanced lines."""
    size = _fit_size(name, "bold", NAME_MAX_SIZE, NAME_MIN_SIZE, width)
    if _width(name, font("bold", size)) <= width:
        return [name], size
    split = _balanced_split(name, font("bold", NAME_MIN_SIZE))
    band = NAME_BAND[1] - NAME_BAND[0]
    if split is not None:
        # Two lines share the band: each at most half its height (with ascent and descent).
        max_two = int(band / 2 / 1.37)
        longest = max(split, key=lambda line: _width(line, font("bold", max_two)))
        size = _fit_size(longest, "bold", max_two, 12, width)
        return list(split), size
    # One unbreakable word: shrink until it fits, however small.
    return [name], _fit_size(name, "bold", NAME_MIN_SIZE, 12, width)


def _draw_name(draw: ImageDraw.ImageDraw, name: str) -> None:
    width = PAGE[0] - 2 * TEXT_MARGIN - 40
    lines, size = _name_lines(name, width)
    face = font("bold", size)
    ascent, descent = face.getmetrics()  # Noto's ascent covers stacked marks (Ễ, Ỗ)
    line_height = ascent + descent
    top = NAME_BAND[0] + (NAME_BAND[1] - NAME_BAND[0] - line_height * len(lines)) / 2
    for i, line in enumerate(lines):
        baseline = top + ascent + i * line_height
        draw.text((PAGE[0] / 2, baseline), line, font=face, fill=DEEP_BLUE, anchor="ms")


def _rule(draw: ImageDraw.ImageDraw, cx: float, y: float, half: float) -> None:
    """A gold rule with a diamond in its middle."""
    draw.line((cx - half, y, cx - 14, y), fill=GOLD, width=2)
    draw.line((cx + 14, y, cx + half, y), fill=GOLD, width=2)
    draw.polygon([(cx, y - 8), (cx + 8, y), (cx, y + 8), (cx - 8, y)], fill=RED)


def _qr_image(url: str, target: int) -> Image.Image:
    code = segno.make_qr(url, error="m")
    modules = code.symbol_size(border=0)[0]
    scale = max(3, target // modules)
    out = io.BytesIO()
    # A quiet zone of four modules, as the standard asks; dark modules in near-black navy.
    code.save(out, kind="png", scale=scale, border=4, dark="#0a1f44", light="#ffffff")
    out.seek(0)
    with Image.open(out) as qr:
        return qr.convert("RGB")


def _draw_qr(image: Image.Image, draw: ImageDraw.ImageDraw, url: str, serial: str) -> None:
    qr = _qr_image(url, QR_MODULES_PX)
    left, top = 250, 862
    draw.rectangle(
        (left - 6, top - 6, left + qr.width + 5, top + qr.height + 5), outline=GOLD, width=2
    )
    image.paste(qr, (left, top))
    cx = left + qr.width / 2
    y = top + qr.height + 36
    draw.text((cx, y), "Quét để xác minh", font=font("italic", 24), fill=INK, anchor="ms")
    draw.text((cx, y + 32), f"Số: {serial}", font=font("bold", 22), fill=DEEP_BLUE, anchor="ms")


def _draw_signature_block(
    image: Image.Image,
    draw: ImageDraw.ImageDraw,
    date_line: str,
    title_lines: list[str],
    signer_name: str,
    signature: bytes | None,
) -> None:
    cx = 1360
    column = 2 * (PAGE[0] - TEXT_MARGIN - cx)
    size = _fit_size(date_line, "italic", 30, 18, column)
    draw.text((cx, 880), date_line, font=font("italic", size), fill=INK, anchor="ms")
    y = 926
    for line in title_lines[:3]:
        face = font("bold", _fit_size(line.upper(), "bold", 28, 16, column))
        draw.text((cx, y), line.upper(), font=face, fill=INK, anchor="ms")
        y += 38
    if signature is not None:
        sign = _signature_image(signature, (int(column * 0.8), 130))
        top = y + 4
        box = (round(cx - sign.width / 2), top)
        if sign.mode == "RGBA":
            image.paste(sign, box, sign)
        else:
            region = (box[0], box[1], box[0] + sign.width, box[1] + sign.height)
            image.paste(ImageChops.multiply(image.crop(region), sign), box)
    if signer_name:
        face = font("bold", _fit_size(signer_name, "bold", 32, 18, column))
        draw.text((cx, 1110), signer_name, font=face, fill=INK, anchor="ms")


def _signature_image(data: bytes, box: tuple[int, int]) -> Image.Image:
    """A scanned signature scaled into `box`: RGBA when it has transparency, else RGB to be
    multiplied onto the paper (its white disappears)."""
    if len(data) > MAX_SIGNATURE_BYTES:
        raise CertificateError("Ảnh chữ ký quá lớn (tối đa 4 MB).")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as raw:
            if raw.width * raw.height > MAX_SIGNATURE_PIXELS:
                raise CertificateError("Ảnh chữ ký có quá nhiều điểm ảnh.")
            raw.load()
            has_alpha = raw.mode in ("RGBA", "LA", "PA") or "transparency" in raw.info
            sign = raw.convert("RGBA" if has_alpha else "RGB")
    except CertificateError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise CertificateError("Ảnh chữ ký không đọc được (cần PNG hoặc JPEG).") from error
    sign.thumbnail(box, Image.Resampling.LANCZOS)
    return sign


@functools.cache
def _certificate_background() -> Image.Image:
    """Paper, frame, corner ornaments and a faint guilloche rosette: the same on every
    certificate, so drawn once per worker (at twice the size, then reduced: smooth curves)."""
    k = 2
    width, height = PAGE[0] * k, PAGE[1] * k
    image = Image.new("RGB", (width, height), PAPER)
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ghost = ImageDraw.Draw(overlay)
    # Guilloche rosettes (hypotrochoids), as on banknotes and diplomas, barely visible.
    for cx, cy, scale, alpha in ((width / 2, height * 0.45, 1.0, 30),):
        for ring, colour in ((1.0, GOLD), (0.72, BLUE)):
            points = _hypotrochoid(
                cx, cy, 560 * k * scale * ring, 97 * k * scale * ring, 245 * k * scale * ring
            )
            ghost.line(points, fill=(*colour, alpha), width=k)
    image.paste(overlay, (0, 0), overlay)
    draw = ImageDraw.Draw(image)

    # The frame: a blue band, a band of small gold diamonds, a double gold line.
    outer = 30 * k
    draw.rectangle((outer, outer, width - outer, height - outer), outline=BLUE, width=16 * k)
    inset = 52 * k
    draw.rectangle((inset, inset, width - inset, height - inset), outline=GOLD, width=3 * k)
    inner = FRAME_INSET * k
    draw.rectangle((inner, inner, width - inner, height - inner), outline=GOLD, width=k)
    _diamond_band(draw, (outer + 8 * k + inset) / 2, width, height, 6 * k)
    for x, y, sx, sy in (
        (inner, inner, 1, 1),
        (width - inner, inner, -1, 1),
        (inner, height - inner, 1, -1),
        (width - inner, height - inner, -1, -1),
    ):
        _corner(draw, x, y, sx, sy, k)
    return image.resize(PAGE, Image.Resampling.LANCZOS)


def _hypotrochoid(cx: float, cy: float, big: float, small: float, arm: float) -> list[float]:
    steps = 2400
    turns = small / math.gcd(round(big), round(small))
    points: list[float] = []
    for i in range(steps + 1):
        t = 2 * math.pi * turns * i / steps
        x = (big - small) * math.cos(t) + arm * math.cos((big - small) / small * t)
        y = (big - small) * math.sin(t) - arm * math.sin((big - small) / small * t)
        scale = big / (big - small + arm)
        points += [cx + x * scale * 0.62, cy + y * scale * 0.62]
    return points


def _diamond_band(draw: ImageDraw.ImageDraw, at: float, width: int, height: int, r: int) -> None:
    """Small gold diamonds in a line around the page, between the blue band and the gold line."""
    step = r * 4
    spots = [
        (float(x), y)
        for x in range(round(at + step), round(width - at - step / 2), step)
        for y in (at, height - at)
    ] + [
        (x, float(y))
        for y in range(round(at + step), round(height - at - step / 2), step)
        for x in (at, width - at)
    ]
    for x, y in spots:
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=GOLD)


def _corner(draw: ImageDraw.ImageDraw, x: float, y: float, sx: int, sy: int, k: int) -> None:
    """An ornament inside a corner of the frame: gold brackets and a red diamond."""
    for offset, length, colour, w in ((14, 110, GOLD, 3), (26, 64, BLUE, 2)):
        ox, oy = x + sx * offset * k, y + sy * offset * k
        draw.line((ox, oy, ox + sx * length * k, oy), fill=colour, width=w * k)
        draw.line((ox, oy, ox, oy + sy * length * k), fill=colour, width=w * k)
    cx, cy, r = x + sx * 44 * k, y + sy * 44 * k, 9 * k
    draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=RED)


# -- the badge -----------------------------------------------------------------------------------


def render_badge(data: BadgeData) -> bytes:
    """The badge as a PNG of `data.size` × `data.size` pixels."""
    name = _check_text("họ tên", data.name)
    title = _check_text("tên huy hiệu", data.title)
    organisation = _check_text("tên tổ chức", data.organisation, required=False)
    if not isinstance(data.year, int) or not 1900 <= data.year <= 2199:
        raise CertificateError("Năm trên huy hiệu không hợp lệ.")
    if not isinstance(data.size, int) or not 200 <= data.size <= 2000:
        raise CertificateError("Kích thước huy hiệu phải từ 200 đến 2000 điểm ảnh.")
    image = _medal(title, data.year, organisation.upper(), data.size, name)
    if not data.transparent:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _medal(title: str, year: int, ring_text: str, size: int, name: str | None) -> Image.Image:
    """The round medal (RGBA, transparent outside it), drawn at three times `size` and reduced
    so its curves are smooth. With `name`, a red ribbon across its lower part carries it."""
    k = 3
    s = size * k
    image = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    cx = s / 2
    cy = s * (0.45 if name else 0.5)
    outer = s * (0.44 if name else 0.49)

    # A gold rosette edge, a blue ring carrying the organisation's name, a cream centre.
    teeth = 60
    points = []
    for i in range(teeth * 2):
        angle = math.pi * i / teeth
        radius = outer if i % 2 == 0 else outer * 0.955
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    draw.polygon(points, fill=GOLD)
    _disc(draw, cx, cy, outer * 0.93, LIGHT_GOLD)
    _disc(draw, cx, cy, outer * 0.90, BLUE)
    _circle(draw, cx, cy, outer * 0.865, LIGHT_GOLD, max(1, round(outer * 0.008)))
    _disc(draw, cx, cy, outer * 0.66, GOLD)
    _disc(draw, cx, cy, outer * 0.635, PAPER)
    _circle(draw, cx, cy, outer * 0.60, BLUE, max(1, round(outer * 0.006)))

    band = outer * 0.865 - outer * 0.66
    ring_radius = outer * 0.66 + band * 0.5
    if ring_text:
        ring_size = round(band * 0.42)
        _text_on_arc(image, ring_text, font("bold", ring_size), cx, cy, ring_radius, (255,) * 3)
    for angle in (math.pi * 0.5 - 0.95, math.pi * 0.5 + 0.95, math.pi * 0.5):
        if name and angle == math.pi * 0.5:
            continue
        sx, sy = cx + ring_radius * math.cos(angle), cy + ring_radius * math.sin(angle)
        _star(draw, sx, sy, band * 0.22, LIGHT_GOLD)

    # The centre: a red star, the title, the year.
    inner = outer * 0.60
    _star(draw, cx, cy - inner * 0.6, inner * 0.17, RED)
    words = title.split(" ")
    lines = [title]
    face = font("bold", _fit_size(title, "bold", round(inner * 0.42), 8, inner * 1.62))
    if face.size < inner * 0.3 and len(words) > 1:
        half = _balanced_split(title, face)
        lines = list(half) if half else [title]
        longest = max(lines, key=len)
        face = font("bold", _fit_size(longest, "bold", round(inner * 0.34), 8, inner * 1.5))
    ascent, descent = face.getmetrics()
    step = ascent + descent * 0.2
    year_face = font("bold", round(inner * 0.26))
    year_height = inner * 0.26
    gap = inner * 0.10
    block = len(lines) * step + gap + year_height
    # The block of title and year sits a little below the centre (the star is above it).
    y = cy - block / 2 + inner * 0.12 + ascent * 0.85
    for line in lines:
        draw.text((cx, y), line, font=face, fill=DEEP_BLUE, anchor="ms")
        y += step
    line_y = y - step + descent + gap * 0.5
    rule = inner * 0.36
    draw.line((cx - rule, line_y, cx + rule, line_y), fill=GOLD, width=max(1, round(inner * 0.02)))
    draw.text(
        (cx, line_y + gap * 0.5 + year_height), str(year), font=year_face, fill=RED, anchor="ms"
    )

    if name:
        _ribbon(draw, s, cx, cy + outer * 0.82, outer, name)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _disc(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: Any) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def _circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: Any, w: int) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=w)


def _star(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: Any) -> None:
    """A five-pointed star, point up (drawn, not a font glyph)."""
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.382
        angle = -math.pi / 2 + math.pi * i / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    draw.polygon(points, fill=fill)


def _text_on_arc(
    image: Image.Image,
    text: str,
    face: ImageFont.FreeTypeFont,
    cx: float,
    cy: float,
    radius: float,
    fill: tuple[int, int, int],
) -> None:
    """`text` along the top of a circle, centred on its top, reading left to right; letters
    upright towards the outside. Too long a text is drawn smaller."""
    tracking = face.size * 0.12
    widths = [_width(c, face) + tracking for c in text]
    arc = sum(widths)
    limit = radius * math.pi * 1.05  # at most about 190 degrees of the ring
    if arc > limit:
        face = font("bold", max(6, int(face.size * limit / arc)))
        tracking = face.size * 0.12
        widths = [_width(c, face) + tracking for c in text]
        arc = sum(widths)
    angle = -math.pi / 2 - arc / radius / 2
    ascent, descent = face.getmetrics()
    for char, width in zip(text, widths, strict=True):
        middle = angle + width / 2 / radius
        if not char.isspace():
            side = round(max(width, ascent + descent) * 1.5)
            glyph = Image.new("RGBA", (side, side), (0, 0, 0, 0))
            # "mm": the middle between ascender and descender, close to the middle of a
            # capital, sits on the ring.
            ImageDraw.Draw(glyph).text(
                (side / 2, side / 2), char, font=face, fill=(*fill, 255), anchor="mm"
            )
            rotated = glyph.rotate(-math.degrees(middle) - 90, resample=Image.Resampling.BICUBIC)
            x = cx + radius * math.cos(middle) - side / 2
            y = cy + radius * math.sin(middle) - side / 2
            image.alpha_composite(rotated, (round(x), round(y)))
        angle += width / radius


def _ribbon(
    draw: ImageDraw.ImageDraw, s: int, cx: float, cy: float, outer: float, name: str
) -> None:
    """A red banner across the medal with swallow-tailed ends, the name on it in white: one
    line shrunk to fit, or two lines on a taller banner when one would be too small to read."""
    half_w = outer * 0.93
    room = half_w * 2 * 0.88
    h = s * 0.12
    size = _fit_size(name, "bold", round(h * 0.5), 6, room)
    lines = [name]
    split = _balanced_split(name, font("bold", round(h * 0.3)))
    if size < h * 0.27 and split is not None:
        h = s * 0.17
        lines = list(split)
        probe = font("bold", round(h * 0.3))
        longest = max(lines, key=lambda t: _width(t, probe))
        size = _fit_size(longest, "bold", round(h * 0.3), 6, room)
    face = font("bold", size)

    top, bottom = cy - h / 2, cy + h / 2
    tail = s * 0.07
    drop = h * 0.32
    dark = (150, 20, 16)
    darker = (110, 14, 12)
    for side in (-1, 1):
        inner_x = cx + side * (half_w - tail * 0.4)
        outer_x = cx + side * (half_w + tail)
        # The tail: behind the banner, lower, with a swallow-tail notch at its end.
        draw.polygon(
            [
                (inner_x, top + drop),
                (outer_x, top + drop),
                (outer_x - side * tail * 0.45, (top + bottom) / 2 + drop),
                (outer_x, bottom + drop),
                (inner_x, bottom + drop),
            ],
            fill=dark,
        )
        # The fold where the banner turns back into the tail.
        edge = cx + side * half_w
        draw.polygon(
            [(edge, bottom), (edge - side * tail * 0.4, bottom + drop), (edge, bottom + drop)],
            fill=darker,
        )
    draw.rectangle((cx - half_w, top, cx + half_w, bottom), fill=RED)
    line = max(1, round(s * 0.003))
    for y in (top + line * 3, bottom - line * 3):
        draw.line((cx - half_w, y, cx + half_w, y), fill=LIGHT_GOLD, width=line)

    # Capitals centred on the banner's middle; stacked marks rise into the space above them.
    cap = face.size * 0.714
    step = face.size * 1.3  # a line's marks never touch the descenders of the line above
    baseline = cy + cap / 2 - step * (len(lines) - 1) / 2
    for text in lines:
        draw.text((cx, baseline), text, font=face, fill=(255, 255, 255), anchor="ms")
        baseline += step


# -- the pool ------------------------------------------------------------------------------------


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # The fork server is one per process and shared with the media pool: whichever pool
        # starts it decides what it preloads; the other's workers import their module on their
        # first task. Either way no worker is a fork of the event loop's process.
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


class CertificateRenderer:
    """Renders certificates and badges in a lazily started `ProcessPoolExecutor`. `workers`:
    processes (default 2, at most the CPU count): issuing is occasional bulk work that should not
    take every core from the server."""

    def __init__(self, workers: int | None = None, *, max_tasks_per_child: int | None = 100):
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self.max_tasks_per_child = max_tasks_per_child
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_context(),
                max_tasks_per_child=self.max_tasks_per_child,
            )
        return self._executor

    @property
    def started(self) -> bool:
        return self._executor is not None

    async def start(self) -> None:
        """Start the workers now rather than on the first certificate."""
        await asyncio.gather(*(self.run(os.getpid) for _ in range(self.workers)))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker process (`fn` and its arguments must pickle)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor(), fn, *args)
        except BrokenProcessPool:
            log.error("certificate worker process died; the pool is restarted")
            self.shutdown(wait=False)
            raise

    async def certificate(self, data: CertificateData) -> RenderedCertificate:
        """`render_certificate(data)` in a worker. Raises `CertificateError`, or
        `BrokenProcessPool` when the worker died (retry: the next call starts a new pool)."""
        return await self.run(render_certificate, data)

    async def badge(self, data: BadgeData) -> bytes:
        """`render_badge(data)` in a worker."""
        return await self.run(render_badge, data)

    def shutdown(self, wait: bool = True) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    async def aclose(self) -> None:
        """Stop the workers without blocking the event loop."""
        await asyncio.to_thread(self.shutdown, True)


__all__ = [
    "PAGE",
    "BadgeData",
    "CertificateData",
    "CertificateError",
    "CertificateRenderer",
    "RenderedCertificate",
    "Style",
    "font",
    "has_glyph",
    "render_badge",
    "render_certificate",
    "smart_quotes",
    "tidy",
    "unsupported_characters",
    "vietnamese_date",
]
