"""The pipeline's media step: inbound → downloaded, inspected, stored → inbound with hashes.
Refusals carry a Vietnamese message and leave nothing stored."""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from yarl import URL

from bots.media import (
    DownloadFailed,
    HostNotAllowed,
    MediaCapture,
    MediaConfig,
    MediaError,
    MediaReason,
    NotAnImage,
    TooLarge,
    UnsupportedFile,
)
from bots.media.capture import capture
from bots.media.fetch import FetchLimits, Origins
from bots.media.inspect import PDF, InspectPool
from bots.records.files import FileStore
from bots.settings import from_env
from flows.vocab import Attachment, Channel, Inbound, InboundKind
from tests.media.conftest import (
    TOKEN,
    VIETQR,
    FakeCdn,
    local_origins,
    pdf_bytes,
    qr_screenshot,
    screenshot,
)

WHEN = datetime(2023, 8, 10, 9, 0, tzinfo=UTC)


def inbound(
    channel: Channel,
    kind: InboundKind,
    *attachments: Attachment,
    district: str = "tan-phu",
) -> Inbound:
    return Inbound(district, channel, "u1", kind, "m1", WHEN, attachments=attachments)


def stored(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
async def media(cdn: FakeCdn, pool: InspectPool, files_dir: Path) -> AsyncIterator[MediaCapture]:
    origins = local_origins(cdn)
    config = MediaConfig(
        origins={c: origins for c in (Channel.MESSENGER, Channel.ZALO, Channel.TELEGRAM)},
        telegram_api=cdn.url,
        fetch=FetchLimits(max_bytes=2 * 2**20, read_timeout=1.0, total_timeout=2.0),
        budget=4.0,
        retry_pause=0.05,
    )
    tokens = {"tan-phu": TOKEN}
    capture_ = MediaCapture(FileStore(files_dir), config, telegram_token=tokens.get, pool=pool)
    yield capture_
    await capture_.close()


async def test_a_messenger_image_is_stored_with_its_facts(
    cdn: FakeCdn, media: MediaCapture, files_dir: Path
) -> None:
    data = qr_screenshot(VIETQR)
    cdn.files["a.png"] = (data, "image/jpeg")  # the platform's claim is not trusted
    url = f"{cdn.url}/img/a.png?oh=sig"
    sent = Attachment(mime="image/jpeg", url=url, unique_id="mid.1")
    result = await capture(inbound(Channel.MESSENGER, InboundKind.IMAGE, sent), media)
    (got,) = result.attachments
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert (got.mime, got.size) == ("image/png", len(data))
    assert got.qr == VIETQR
    assert got.phash is not None and len(got.phash) == 16
    assert (got.url, got.unique_id) == (url, "mid.1")
    assert FileStore(files_dir).read(got.sha256) == data
    assert replace(result, attachments=()) == replace(
        inbound(Channel.MESSENGER, InboundKind.IMAGE), attachments=()
    )


async def test_facts_come_back_with_the_inbound(cdn: FakeCdn, media: MediaCapture) -> None:
    cdn.files["a.png"] = (screenshot(1, size=(300, 500)), "image/png")
    sent = Attachment(url=f"{cdn.url}/img/a.png")
    captured = await media.capture_facts(inbound(Channel.ZALO, InboundKind.IMAGE, sent))
    (facts,) = captured.facts
    assert (facts.width, facts.height, facts.format) == (300, 500, "PNG")
    assert captured.inbound.attachments[0].sha256 == facts.sha256


async def test_stickers_and_text_are_never_downloaded(cdn: FakeCdn, media: MediaCapture) -> None:
    cdn.files["like.png"] = (screenshot(1), "image/png")
    sticker = inbound(
        Channel.MESSENGER,
        InboundKind.STICKER,
        Attachment(url=f"{cdn.url}/img/like.png", unique_id="369239263222822"),
    )
    assert await media.capture(sticker) is sticker
    text = replace(inbound(Channel.MESSENGER, InboundKind.TEXT), text="xin chào")
    assert await media.capture(text) is text
    assert cdn.seen == []


async def test_a_telegram_photo_goes_through_get_file(
    cdn: FakeCdn, media: MediaCapture, files_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = screenshot(5)
    cdn.tg_files["AgAD"] = ("photos/file_1.jpg", data)
    sent = Attachment(mime="image/jpeg", file_id="AgAD", unique_id="AQADu")
    result = await media.capture(inbound(Channel.TELEGRAM, InboundKind.IMAGE, sent))
    assert result.attachments[0].sha256 == hashlib.sha256(data).hexdigest()
    assert result.attachments[0].unique_id == "AQADu"
    assert cdn.seen == [f"/bot{TOKEN}/getFile", f"/file/bot{TOKEN}/photos/file_1.jpg"]
    # a refusal is logged, without the token
    missing = Attachment(file_id="nope")
    with pytest.raises(DownloadFailed):
        await media.capture(inbound(Channel.TELEGRAM, InboundKind.IMAGE, missing))
    assert "media refused" in caplog.text
    assert "SECRET" not in caplog.text


async def test_telegram_without_a_token_for_the_district(media: MediaCapture) -> None:
    sent = Attachment(file_id="AgAD")
    with pytest.raises(DownloadFailed, match="token"):
        await media.capture(
            inbound(Channel.TELEGRAM, InboundKind.IMAGE, sent, district="no-such-district")
        )


async def test_a_fake_image_is_refused_in_vietnamese_and_not_stored(
    cdn: FakeCdn, media: MediaCapture, files_dir: Path
) -> None:
    cdn.files["x.png"] = (b"not an image at all\n" * 50, "image/png")
    sent = Attachment(url=f"{cdn.url}/img/x.png")
    with pytest.raises(NotAnImage) as caught:
        await media.capture(inbound(Channel.ZALO, InboundKind.IMAGE, sent))
    error = caught.value
    assert error.reason is MediaReason.NOT_AN_IMAGE
    assert "không phải là ảnh" in error.text
    assert unicodedata.is_normalized("NFC", error.text)
    assert stored(files_dir) == []


async def test_a_refused_second_attachment_leaves_no_file(
    cdn: FakeCdn, media: MediaCapture, files_dir: Path
) -> None:
    cdn.files["ok.png"] = (screenshot(1), "image/png")
    cdn.files["bad.png"] = (b"<html>nope</html>", "image/png")
    message = inbound(
        Channel.MESSENGER,
        InboundKind.IMAGE,
        Attachment(url=f"{cdn.url}/img/ok.png"),
        Attachment(url=f"{cdn.url}/img/bad.png"),
    )
    with pytest.raises(NotAnImage):
        await media.capture(message)
    assert stored(files_dir) == []
    assert cdn.seen == ["/img/ok.png", "/img/bad.png"]


async def test_a_file_is_sniffed_and_kept(
    cdn: FakeCdn, media: MediaCapture, files_dir: Path
) -> None:
    cdn.files["d.pdf"] = (pdf_bytes(), "application/octet-stream")
    sent = Attachment(mime="application/octet-stream", url=f"{cdn.url}/img/d.pdf", name="d.pdf")
    result = await media.capture(inbound(Channel.ZALO, InboundKind.FILE, sent))
    got = result.attachments[0]
    assert (got.mime, got.phash, got.qr, got.name) == (PDF, None, None, "d.pdf")
    assert len(stored(files_dir)) == 1


async def test_a_program_sent_as_a_file_is_refused(cdn: FakeCdn, media: MediaCapture) -> None:
    cdn.files["setup.exe"] = (b"MZ\x90\x00" + b"\0" * 500, "application/octet-stream")
    sent = Attachment(url=f"{cdn.url}/img/setup.exe", name="setup.exe")
    with pytest.raises(UnsupportedFile) as caught:
        await media.capture(inbound(Channel.ZALO, InboundKind.FILE, sent))
    assert "PDF" in caught.value.text


async def test_too_large_is_worded_for_files_and_images(media: MediaCapture) -> None:
    big = Attachment(url="https://f21-zpc.zdn.vn/big.pdf", size=50 * 2**20)
    with pytest.raises(TooLarge) as as_file:
        await media.capture(inbound(Channel.ZALO, InboundKind.FILE, big))
    with pytest.raises(TooLarge) as as_image:
        await media.capture(inbound(Channel.ZALO, InboundKind.IMAGE, big))
    assert as_file.value.text.startswith("Tệp lớn quá 2 MB")
    assert as_image.value.text.startswith("Ảnh lớn quá 2 MB")


async def test_a_url_of_another_platform_is_refused(media: MediaCapture) -> None:
    # A Zalo message pointing at Meta's CDN (or anywhere else): refused before any connection.
    sent = Attachment(url="https://scontent.xx.fbcdn.net/v/a.png")
    with pytest.raises(HostNotAllowed) as caught:
        await media.capture(inbound(Channel.ZALO, InboundKind.IMAGE, sent))
    assert "chưa tải được ảnh" in caught.value.text


async def test_a_transient_failure_is_tried_again(cdn: FakeCdn, media: MediaCapture) -> None:
    cdn.files["a.png"] = (screenshot(1), "image/png")
    cdn.flaky = 1
    sent = Attachment(url=f"{cdn.url}/flaky/a.png")
    result = await media.capture(inbound(Channel.ZALO, InboundKind.IMAGE, sent))
    assert result.attachments[0].sha256
    assert cdn.seen == ["/flaky/a.png", "/flaky/a.png"]


async def test_a_permanent_failure_is_not(cdn: FakeCdn, media: MediaCapture) -> None:
    sent = Attachment(url=f"{cdn.url}/status/403")  # an expired signed link
    with pytest.raises(DownloadFailed):
        await media.capture(inbound(Channel.MESSENGER, InboundKind.IMAGE, sent))
    assert cdn.seen == ["/status/403"]


async def test_the_download_budget_bounds_the_whole_capture(
    cdn: FakeCdn, pool: InspectPool, files_dir: Path
) -> None:
    cdn.slow_for = 3.0
    config = MediaConfig(
        origins={Channel.ZALO: local_origins(cdn)},
        fetch=FetchLimits(read_timeout=5.0, total_timeout=5.0),
        budget=0.4,
    )
    media = MediaCapture(FileStore(files_dir), config, pool=pool)
    try:
        with pytest.raises(DownloadFailed, match="within"):
            await media.capture(
                inbound(Channel.ZALO, InboundKind.IMAGE, Attachment(url=f"{cdn.url}/slow"))
            )
    finally:
        await media.close()
    assert pool.started and await pool.run(os.getpid)  # close() leaves a shared pool running


async def test_an_upload_already_stored_gets_its_facts(
    cdn: FakeCdn, media: MediaCapture, files_dir: Path
) -> None:
    data = qr_screenshot("https://thanhnien.vn/u/abc123")
    sha = FileStore(files_dir).put(data)
    sent = Attachment(mime="image/png", size=len(data), sha256=sha, name="anh.png")
    result = await media.capture(inbound(Channel.WEBCHAT, InboundKind.IMAGE, sent))
    got = result.attachments[0]
    assert (got.sha256, got.qr) == (sha, "https://thanhnien.vn/u/abc123")
    assert got.phash is not None
    assert cdn.seen == []


async def test_inspect_bytes_for_uploads(media: MediaCapture, files_dir: Path) -> None:
    data = screenshot(4)
    facts = await media.inspect_bytes(data)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert stored(files_dir) == []
    kept = await media.store_bytes(data)
    assert FileStore(files_dir).read(kept.sha256) == data
    with pytest.raises(MediaError) as caught:
        await media.inspect_bytes(b"GIF89a broken")
    assert caught.value.reason is MediaReason.NOT_AN_IMAGE


def test_config_from_settings(tmp_path: Path) -> None:
    settings = from_env(
        {
            "LOA_DATA_DIR": str(tmp_path),
            "LOA_TELEGRAM_API": "http://127.0.0.1:8081",
            "LOA_LOCK_TTL": "10",
        }
    )
    config = MediaConfig.from_settings(settings, extra_origins={Channel.ZALO: ["http://[::1]:9"]})
    assert config.telegram_api == "http://127.0.0.1:8081"
    assert config.origins[Channel.TELEGRAM] == Origins.of(bases=["http://127.0.0.1:8081"])
    assert config.origins[Channel.ZALO].allows(URL("http://[::1]:9/a"))
    assert config.origins[Channel.ZALO].allows(URL("https://f21-zpc.zdn.vn/a.jpg"))
    assert config.budget <= 6.0  # inside the conversation lock's lease
    media = MediaCapture.from_settings(settings)
    assert media.files.root == settings.files_dir
