"""Inspection in the process pool: images decode or are refused (fakes, bombs, truncation,
formats outside the list), hashes and QR text are recorded, files are sniffed not decoded."""

from __future__ import annotations

import hashlib
import io
import os
from unittest import mock

import imagehash
import pytest
from PIL import Image

from bots.media.errors import NotAnImage, TooLarge, TooManyPixels, UnsupportedFile
from bots.media.inspect import DOCX, PDF, InspectPool, Limits, inspect_sync, sniff
from tests.media.conftest import (
    VIETQR,
    bomb_png,
    docx_bytes,
    pdf_bytes,
    qr_screenshot,
    reencoded,
    screenshot,
)


async def test_an_image_is_decoded_hashed_and_measured(pool: InspectPool) -> None:
    data = screenshot(1, size=(360, 640))
    facts = await pool.inspect(data)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert (facts.mime, facts.format, facts.width, facts.height) == ("image/png", "PNG", 360, 640)
    assert facts.size == len(data)
    assert facts.phash is not None and len(facts.phash) == 16
    int(facts.phash, 16)  # hex
    assert facts.qr == () and facts.qr_text is None


async def test_phash_is_a_near_duplicate_hint(pool: InspectPool) -> None:
    original = screenshot(7)
    again = await pool.inspect(reencoded(original, "JPEG"))
    first = await pool.inspect(original)
    other = await pool.inspect(screenshot(8))
    assert first.sha256 != again.sha256  # different bytes
    assert again.mime == "image/jpeg"
    same = imagehash.hex_to_hash(first.phash) - imagehash.hex_to_hash(again.phash)
    different = imagehash.hex_to_hash(first.phash) - imagehash.hex_to_hash(other.phash)
    assert same <= 6 < different


async def test_a_qr_code_is_read_to_its_text(pool: InspectPool) -> None:
    facts = await pool.inspect(qr_screenshot(VIETQR))
    assert facts.qr == (VIETQR,)
    assert facts.qr_text == VIETQR


async def test_a_vietnamese_qr_payload_survives(pool: InspectPool) -> None:
    payload = "Nguyễn Văn An|079203001234|Đoàn phường Hòa Thạnh"
    facts = await pool.inspect(qr_screenshot(payload))
    assert facts.qr_text == payload


async def test_text_named_png_is_not_an_image(pool: InspectPool) -> None:
    with pytest.raises(NotAnImage):
        await pool.inspect(b"this is not a picture, just text pretending.png\n" * 20)


async def test_a_truncated_image_is_not_an_image(pool: InspectPool) -> None:
    data = screenshot(1)
    with pytest.raises(NotAnImage):
        await pool.inspect(data[: len(data) // 2])


async def test_a_decompression_bomb_is_refused(pool: InspectPool) -> None:
    bomb = bomb_png(10_000)  # 100 MP in a few kilobytes: Pillow's DecompressionBombError
    assert len(bomb) < 200_000
    with pytest.raises(TooManyPixels):
        await pool.inspect(bomb)


async def test_between_the_limit_and_twice_it_is_refused_too(pool: InspectPool) -> None:
    # 49 MP: Pillow only warns (the warning is made an error)
    with pytest.raises(TooManyPixels):
        await pool.inspect(bomb_png(7_000))
    # and a stricter configured limit applies
    with pytest.raises(TooManyPixels):
        await pool.inspect(screenshot(1, size=(400, 400)), limits=Limits(max_pixels=100_000))


async def test_formats_outside_the_list_are_refused(pool: InspectPool) -> None:
    out = io.BytesIO()
    Image.new("RGB", (50, 50), "red").save(out, "TIFF")
    with pytest.raises(NotAnImage):
        await pool.inspect(out.getvalue())


async def test_more_bytes_than_the_cap_are_refused(pool: InspectPool) -> None:
    data = screenshot(1)
    with pytest.raises(TooLarge) as caught:
        await pool.inspect(data, limits=Limits(max_bytes=1000))
    assert caught.value.read == len(data)


async def test_files_are_sniffed_not_decoded(pool: InspectPool) -> None:
    pdf = await pool.inspect(pdf_bytes(), want_image=False)
    assert (pdf.mime, pdf.phash, pdf.format) == (PDF, None, None)
    assert not pdf.is_image
    docx = await pool.inspect(docx_bytes(), want_image=False, name="ds.docx")
    assert docx.mime == DOCX
    # an image sent as a file is still decoded and hashed
    png = await pool.inspect(screenshot(2), want_image=False)
    assert png.is_image and png.phash is not None


@pytest.mark.parametrize(
    "data",
    [
        b"\x7fELF\x02\x01\x01" + b"\0" * 200,  # a program
        b"MZ\x90\x00\x03" + b"\0" * 200,  # a Windows program
        b"PK\x03\x04" + b"\0" * 100,  # a plain zip (not a document)
    ],
)
async def test_other_files_are_refused(pool: InspectPool, data: bytes) -> None:
    with pytest.raises(UnsupportedFile):
        await pool.inspect(data, want_image=False)


async def test_a_pdf_where_an_image_is_wanted_is_not_an_image(pool: InspectPool) -> None:
    with pytest.raises(NotAnImage):
        await pool.inspect(pdf_bytes(), want_image=True)


def test_sniff() -> None:
    assert sniff(screenshot(1)) == "image/png"
    assert sniff(reencoded(screenshot(1))) == "image/jpeg"
    assert sniff(pdf_bytes()) == PDF
    assert sniff("Họ tên,Đơn vị\nAn,Hòa Thạnh\n".encode(), "ds.csv") == "text/csv"
    assert sniff(b"BMW,Mercedes\n", "cars.txt") == "text/plain"  # "BM" alone is not a bitmap
    assert sniff(b"\x00\x01\x02binary") == "application/octet-stream"


async def test_the_work_runs_in_another_process(pool: InspectPool) -> None:
    worker = await pool.run(os.getpid)
    assert worker != os.getpid()
    # Decoding is impossible in this process now; the pool still decodes: it ran elsewhere.
    with mock.patch.object(Image, "open", side_effect=AssertionError("decoded in the loop")):
        facts = await pool.inspect(screenshot(3, size=(200, 300)))
        with pytest.raises(AssertionError):
            inspect_sync(screenshot(3, size=(200, 300)))
    assert (facts.width, facts.height) == (200, 300)


async def test_a_shut_down_pool_starts_again_when_used() -> None:
    own = InspectPool(workers=1)
    try:
        first = await own.run(os.getpid)
        own.shutdown()
        assert not own.started
        second = await own.run(os.getpid)
        assert first != second and own.started
    finally:
        own.shutdown()
