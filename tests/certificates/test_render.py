"""Certificates and badges: valid PNG and PDF of the promised size, a QR code that scans to the
verify URL, long and heavily accented names inside the page, every Vietnamese letter in the shipped
font, bad data refused in Vietnamese, and the drawing done in another process."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import io
import os
import re
import time
import unicodedata

import pytest
import zxingcpp
from PIL import Image, ImageChops, ImageDraw, PdfParser

from bots.certificates.render import (
    FRAME_INSET,
    NAME_BAND,
    PAGE,
    TEXT_MARGIN,
    BadgeData,
    CertificateError,
    CertificateRenderer,
    RenderedCertificate,
    Style,
    font,
    has_glyph,
    render_badge,
    render_certificate,
    unsupported_characters,
    vietnamese_date,
)
from tests.certificates.conftest import VERIFY_URL, certificate_data
from tests.certificates.workers import render_with_pid

LONG_NAME = "Nguyễn Thị Huỳnh Hương Trần Lê Ngọc Diễm"
CAPITALS = "ỄỆỖỘỞ"

# Every Vietnamese letter: the twelve vowels with each of the six tones, and đ, in both cases.
_VOWELS = "aăâeêioôơuưy"
_TONES = ["", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323"]  # ngang huyền sắc hỏi ngã nặng
VIETNAMESE_LETTERS = sorted(
    {
        unicodedata.normalize("NFC", base + tone)
        for vowel in _VOWELS
        for base in (vowel, vowel.upper())
        for tone in _TONES
    }
    | {"đ", "Đ"}
)


@functools.cache
def rendered(name: str = "Nguyễn Văn An") -> RenderedCertificate:
    return render_certificate(certificate_data(name=name))


def image_of(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def name_ink(name: str) -> tuple[int, int, int, int]:
    """Where `name` was drawn: the pixels that differ from the same certificate with another,
    one-letter name (whose ink lies inside any name's)."""
    with_name = image_of(rendered(name).png).convert("RGB")
    other = image_of(rendered("I").png).convert("RGB")
    box = ImageChops.difference(with_name, other).getbbox()
    assert box is not None
    return box


# -- files ---------------------------------------------------------------------------------------


def test_certificate_png_is_a4_landscape_at_150_dpi() -> None:
    image = image_of(rendered().png)
    assert image.format == "PNG"
    assert image.size == PAGE == (1754, 1240)
    dpi = image.info["dpi"]
    assert round(dpi[0]) == round(dpi[1]) == 150


def test_certificate_pdf_is_one_a4_page() -> None:
    pdf = rendered().pdf
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)
    assert box is not None
    width_mm = float(box[1]) / 72 * 25.4
    height_mm = float(box[2]) / 72 * 25.4
    assert abs(width_mm - 297) < 1 and abs(height_mm - 210) < 1


def test_the_pdf_is_titled_and_reproducible() -> None:
    pdf = rendered().pdf
    info = PdfParser.PdfParser(f=io.BytesIO(pdf)).info
    title = info[PdfParser.PdfName(b"Title")]
    assert PdfParser.decode_text(title) == "GIẤY CHỨNG NHẬN – Nguyễn Văn An"
    assert info[PdfParser.PdfName(b"CreationDate")] == b"D:20231015000000Z"
    assert render_certificate(certificate_data()).pdf == pdf


def test_the_pdf_page_carries_the_certificate_with_its_qr_code() -> None:
    pdf = rendered().pdf
    start = pdf.index(b"\xff\xd8\xff")  # the page's image is a JPEG stream
    page = Image.open(io.BytesIO(pdf[start:]))
    page.load()
    assert page.size == PAGE
    assert [code.text for code in zxingcpp.read_barcodes(page)] == [VERIFY_URL]


def test_the_qr_code_scans_to_the_verify_url() -> None:
    codes = zxingcpp.read_barcodes(image_of(rendered().png))
    assert [code.text for code in codes] == [VERIFY_URL]
    assert codes[0].format == zxingcpp.BarcodeFormat.QRCode


def test_a_different_url_gives_a_different_code() -> None:
    url = "http://127.0.0.1:8080/verify/CDS-2023-000999-ABCDEF"
    image = image_of(render_certificate(certificate_data(verify_url=url)).png)
    assert [code.text for code in zxingcpp.read_barcodes(image)] == [url]


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        LONG_NAME,
        CAPITALS,
        "Nguyễn Văn An",
        # Far longer than any real name: two lines, still inside the band.
        "Tôn Nữ Thị Hoàng Yến Phương Ngọc Quỳnh Như Ý Hồng Nhung Trương Vĩnh Ký Đặng",
        # One unbreakable word wider than the page at the minimum size.
        "Ngưỡngưỡngưỡngưỡngưỡngưỡngưỡngưỡngưỡngưỡngưỡngưỡngưỡng",
    ],
)
def test_the_name_fits_inside_its_band_and_the_frame(name: str) -> None:
    left, top, right, bottom = name_ink(name)
    assert left >= TEXT_MARGIN - 20 and right <= PAGE[0] - TEXT_MARGIN + 20
    assert left > FRAME_INSET and right < PAGE[0] - FRAME_INSET
    assert NAME_BAND[0] <= top and bottom <= NAME_BAND[1]


def test_a_long_name_shrinks_but_stays_large() -> None:
    short = name_ink("Nguyễn Văn An")
    long = name_ink(LONG_NAME)
    assert long[2] - long[0] > short[2] - short[0]  # wider on the page
    assert long[3] - long[1] >= 0.45 * (short[3] - short[1])  # still at least half as tall


def test_stacked_marks_on_capitals_are_drawn_whole() -> None:
    """Ễ's circumflex and tilde rise far above the capital: the ink's top lies well above that
    of plain capitals of the same size, and still inside the band."""
    marked = name_ink(CAPITALS)
    plain = name_ink("EEOOO")
    assert marked[1] < plain[1] - 15  # the marks are there, above the letters
    assert marked[3] > plain[3] + 5  # and the dots below (Ệ, Ộ)
    assert NAME_BAND[0] <= marked[1]


def test_names_are_printed_as_confirmed_in_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Nguyễn Văn An")
    assert decomposed != "Nguyễn Văn An"
    assert render_certificate(certificate_data(name=decomposed)).png == rendered().png


# -- the font ------------------------------------------------------------------------------------


def test_the_letter_list_is_complete() -> None:
    assert len(VIETNAMESE_LETTERS) == 12 * 6 * 2 + 2
    assert all(len(letter) == 1 for letter in VIETNAMESE_LETTERS)  # all precomposed


@pytest.mark.parametrize("style", ["regular", "bold", "italic", "bolditalic"])
def test_every_vietnamese_letter_has_a_glyph(style: Style) -> None:
    face = font(style, 40)
    notdef = face.getmask("\ue000")
    missing = []
    for letter in VIETNAMESE_LETTERS:
        mask = face.getmask(letter)
        if mask.getbbox() is None or (bytes(mask) == bytes(notdef) and mask.size == notdef.size):
            missing.append(letter)
    assert missing == []
    assert has_glyph("\ue000") is False


def test_a_character_the_font_lacks_is_refused_in_vietnamese() -> None:
    assert unsupported_characters("Lan 🌸 Anh") == "🌸"
    with pytest.raises(CertificateError, match="🌸") as caught:
        render_certificate(certificate_data(name="Lan 🌸 Anh"))
    assert "không in được" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"name": "   "}, "Thiếu họ tên"),
        ({"verify_url": "javascript:alert(1)"}, "URL"),
        ({"organisation": ""}, "Thiếu tên đơn vị cấp"),
        ({"name": "A" * 400}, "quá dài"),
        ({"signature_png": b"not an image"}, "chữ ký"),
    ],
)
def test_bad_data_is_refused_with_a_reason(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(CertificateError, match=fragment):
        render_certificate(certificate_data(**changes))


def test_a_signature_on_white_paper_is_printed_without_its_white() -> None:
    sign = Image.new("RGB", (600, 200), "white")
    ImageDraw.Draw(sign).line([(40, 150), (200, 40), (560, 120)], fill=(20, 30, 120), width=10)
    out = io.BytesIO()
    sign.save(out, "PNG")
    with_sign = image_of(render_certificate(certificate_data(signature_png=out.getvalue())).png)
    plain = image_of(rendered().png)
    diff = ImageChops.difference(with_sign.convert("RGB"), plain.convert("RGB"))
    box = diff.getbbox()
    assert box is not None
    left, _, _, bottom = box
    assert left > PAGE[0] / 2 and bottom < PAGE[1] - FRAME_INSET  # in the signature block
    # Only the stroke changed the page: the scan's white paper did not cover the certificate.
    changed = diff.crop(box).convert("L").point(lambda v: 255 if v > 0 else 0)
    histogram = changed.histogram()
    share = histogram[255] / (histogram[0] + histogram[255])
    assert 0.02 < share < 0.3


def test_date_line_follows_administrative_style() -> None:
    assert (
        vietnamese_date("TP. Hồ Chí Minh", dt.date(2023, 10, 15))
        == "TP. Hồ Chí Minh, ngày 15 tháng 10 năm 2023"
    )
    assert vietnamese_date("Bến Tre", dt.date(2024, 2, 5)) == "Bến Tre, ngày 05 tháng 02 năm 2024"
    assert vietnamese_date("", dt.date(2023, 3, 9)) == "Ngày 09 tháng 3 năm 2023"


# -- the badge -----------------------------------------------------------------------------------


def test_badge_is_a_png_of_the_requested_size() -> None:
    png = render_badge(BadgeData(name="Nguyễn Văn An", year=2023))
    image = image_of(png)
    assert (image.format, image.size, image.mode) == ("PNG", (600, 600), "RGB")
    assert image.getpixel((0, 0)) == (255, 255, 255)  # white outside the medal
    bigger = image_of(render_badge(BadgeData(name="Nguyễn Văn An", year=2023, size=900)))
    assert bigger.size == (900, 900)


def test_badge_shows_name_and_year() -> None:
    base = image_of(render_badge(BadgeData(name="Nguyễn Văn An", year=2023))).convert("RGB")
    other_name = image_of(render_badge(BadgeData(name="Lê Thị Bé", year=2023))).convert("RGB")
    other_year = image_of(render_badge(BadgeData(name="Nguyễn Văn An", year=2024))).convert("RGB")
    name_box = ImageChops.difference(base, other_name).getbbox()
    year_box = ImageChops.difference(base, other_year).getbbox()
    assert name_box is not None and year_box is not None
    assert name_box[1] > year_box[3]  # the name is below the year (on the ribbon)
    assert name_box[0] > 0 and name_box[2] < 600  # inside the picture


def test_a_long_name_on_the_badge_stays_on_the_ribbon() -> None:
    short = image_of(render_badge(BadgeData(name="An", year=2023))).convert("RGB")
    long = image_of(render_badge(BadgeData(name=LONG_NAME, year=2023))).convert("RGB")
    box = ImageChops.difference(short, long).getbbox()
    assert box is not None
    left, _, right, bottom = box
    assert left > 0 and right < 600 and bottom < 600


def test_transparent_badge_has_an_alpha_channel() -> None:
    image = image_of(render_badge(BadgeData(name="An", year=2023, transparent=True)))
    assert image.mode == "RGBA"
    alpha = image.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0
    assert alpha.getpixel((300, 300)) == 255


def test_badge_refuses_a_bad_year() -> None:
    with pytest.raises(CertificateError, match="Năm"):
        render_badge(BadgeData(name="An", year=99))


# -- the pool ------------------------------------------------------------------------------------


async def test_rendering_runs_in_another_process(renderer: CertificateRenderer) -> None:
    pid, result = await renderer.run(render_with_pid, certificate_data())
    assert pid != os.getpid()
    assert result.png == rendered().png


async def test_the_event_loop_keeps_running_while_a_certificate_is_drawn(
    renderer: CertificateRenderer,
) -> None:
    await renderer.start()
    ticks = 0
    done = False

    async def tick() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    result = await renderer.certificate(certificate_data(name=LONG_NAME))
    badge = await renderer.badge(BadgeData(name=LONG_NAME, year=2023))
    elapsed = time.monotonic() - started
    done = True
    await ticker
    assert result.png == rendered(LONG_NAME).png
    assert image_of(badge).size == (600, 600)
    assert ticks >= 0.5 * elapsed / 0.01  # the loop was free at least half of the time


async def test_a_refusal_crosses_the_process_boundary(renderer: CertificateRenderer) -> None:
    with pytest.raises(CertificateError, match="Thiếu họ tên"):
        await renderer.certificate(certificate_data(name=""))


async def test_the_pool_starts_lazily_and_restarts_after_shutdown() -> None:
    pool = CertificateRenderer(workers=1)
    assert not pool.started
    try:
        first = await pool.run(os.getpid)
        assert pool.started and first != os.getpid()
        await pool.aclose()
        assert not pool.started
        second = await pool.run(os.getpid)
        assert second not in (first, os.getpid())
    finally:
        pool.shutdown()
