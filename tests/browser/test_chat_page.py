"""The browser chat in a real headless Chromium, against a real `loa serve` subprocess, at phone
size. Screenshots go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from bots.supervisor import free_port
from tests.required import ARGS, CHROMIUM, require_chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
PHONE = {"width": 360, "height": 740}

require_chromium()

from playwright.sync_api import Page, Request, expect, sync_playwright  # noqa: E402


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`loa serve` on a free port and a fresh data dir; stopped with SIGINT afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(tmp_path / "var"), LOA_CONFIG=str(REPO / "flows.yaml"),
               PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "bots.cli", "serve", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        encoding="utf-8",
    )
    url = None
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Loa đang chạy tại" in line:
            url = line.split("Loa đang chạy tại", 1)[1].split()[0]
            break
    if url is None:
        process.kill()
        pytest.fail("loa serve did not start:\n" + "".join(seen))
    assert url == f"http://127.0.0.1:{port}/"
    try:
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, rest
        assert "Loa đã dừng." in rest


def screenshot_png(label: str) -> bytes:
    image = Image.new("RGB", (390, 844), "#1d3c78")
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((30, 120, 360, 560), radius=24, fill="white")
    draw.text((50, 600), label, fill="white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def bot_says(page: Page, text: str) -> None:
    expect(page.locator(".row.bot .bubble").filter(has_text=text).last).to_be_visible()


def type_and_send(page: Page, text: str) -> None:
    box = page.locator("#text")
    box.fill(text)
    box.press("Enter")


def test_registration_and_an_upload_at_phone_size(server: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(
            viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale="vi-VN"
        )
        page = context.new_page()
        expect.set_options(timeout=15_000)

        def remember(request: Request) -> None:
            requests.append(request.url)

        page.on("request", remember)
        page.goto(server)
        bot_says(page, "Bạn muốn làm gì?")
        page.locator(".chip", has_text="Đăng ký thông tin").click()
        bot_says(page, "Bạn đồng ý chứ?")
        page.locator(".chip", has_text="Đồng ý").first.click()
        bot_says(page, "Họ và tên của bạn")

        # A flaky connection: the first attempt to send the name fails; the page retries it
        # with the same message id and the server handles it once.
        failed = {"n": 0}

        def flaky(route: object) -> None:
            if failed["n"] == 0:
                failed["n"] += 1
                route.abort()  # type: ignore[attr-defined]
            else:
                route.continue_()  # type: ignore[attr-defined]

        page.route("**/chat/send", flaky)
        type_and_send(page, "Lê Văn Cường")
        expect(page.locator(".row.me .meta").last).to_contain_text("thử lại")
        bot_says(page, "đơn vị nào")
        page.unroute("**/chat/send")
        assert failed["n"] == 1
        expect(page.locator(".row.me .bubble", has_text="Lê Văn Cường")).to_have_count(1)

        type_and_send(page, "Chi đoàn Khu phố 1")
        bot_says(page, "Chức vụ Đoàn")
        page.locator(".chip", has_text="Đoàn viên").click()
        bot_says(page, "Địa chỉ email")
        type_and_send(page, "cuong.le@gmail.com")
        bot_says(page, "Số điện thoại")
        type_and_send(page, "0903 123 456")
        bot_says(page, "Thông tin đã đúng chưa?")
        page.screenshot(path=str(ARTIFACTS / "chat-summary.png"))
        page.locator(".chip", has_text="Đúng rồi").click()
        bot_says(page, "đăng ký thành công")
        expect(page.locator(".row.bot .bubble").filter(has_text="Lê Văn Cường")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "chat-registered.png"))

        # Into the challenge: the sample screenshot shows inline, an image goes up.
        type_and_send(page, "menu")
        bot_says(page, "Bạn muốn làm gì?")
        page.locator(".chip", has_text="Tham gia thử thách").click()
        page.locator(".chip", has_text="Thực hiện thôi nào").click()
        bot_says(page, "Bước 1/4")
        sample = page.locator(".row.bot img").last
        expect(sample).to_be_visible()
        assert sample.evaluate("img => img.complete && img.naturalWidth > 0")
        note = tmp_path / "ghi-chu.txt"
        note.write_text("không phải ảnh", encoding="utf-8")
        page.set_input_files("#file", str(note))
        expect(page.locator(".row.me .meta.error").last).to_contain_text("không phải là ảnh")
        shot = tmp_path / "vneid.png"
        shot.write_bytes(screenshot_png("VNeID"))
        page.set_input_files("#file", str(shot))
        bot_says(page, "Bước 2/4")
        expect(page.locator(".row.me img").last).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "chat-upload.png"))

        # Reloading keeps the conversation (localStorage) and does not start it again.
        count = page.locator(".row.bot").count()
        page.reload()
        bot_says(page, "Bước 2/4")
        page.wait_for_timeout(500)
        assert page.locator(".row.bot").count() == count
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # nothing overflows sideways on a small phone
        browser.close()

    local = (server.rstrip("/"), "data:", "blob:")
    assert requests and all(url.startswith(local) for url in requests), requests
