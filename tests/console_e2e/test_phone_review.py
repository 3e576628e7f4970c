"""The organiser's side of the milestone in a real headless Chromium at phone size (360×740):
log in, open a submission whose pictures came through the chat, reject one item with a reason,
approve after the participant sent it again, and download the certificate once the participant
confirmed the name. The participant uses the chat's HTTP API (tests/certificates_e2e). Screenshots
go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bots.records.models import CertificateStatus, SubmissionStatus
from tests.certificates_e2e.conftest import (
    IMAGES,
    NAME,
    ORGANISERS,
    PASSWORD,
    PRINTED,
    Chat,
    Server,
    register_and_submit,
    screenshot,
)
from tests.required import ARGS, CHROMIUM, require_chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
PHONE = {"width": 360, "height": 740}
REASON = "Ảnh bị cắt mất mã QR, bạn chụp lại cả màn hình nhé"

require_chromium()

from playwright.async_api import Page, async_playwright, expect  # noqa: E402


async def shot(page: Page, name: str, full: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"certificate-phone-{name}.png"), full_page=full)


async def no_horizontal_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = await page.evaluate("window.innerWidth")
    assert width <= viewport, f"page is {width}px wide in a {viewport}px viewport"


async def card_free_context_check(browser: object, origin: str, serial: str) -> None:
    """The verify page in a fresh context (no console cookie: anyone's phone)."""
    context = await browser.new_context(  # type: ignore[attr-defined]
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale="vi-VN")
    page = await context.new_page()
    await page.goto(f"{origin}/verify/{serial}")
    await expect(page.get_by_text("Giấy chứng nhận hợp lệ")).to_be_visible()
    await expect(page.locator("dd.name")).to_have_text(PRINTED)
    await no_horizontal_scroll(page)
    await shot(page, "8-verify", full=False)
    await page.goto(f"{origin}/chung-nhan")
    await expect(page.get_by_role("heading", name="Tìm giấy chứng nhận của tôi")).to_be_visible()
    await no_horizontal_scroll(page)
    await shot(page, "9-lookup", full=False)
    await context.close()


async def test_review_reject_approve_and_download_the_certificate_on_a_phone(
    server: Server, tmp_path: Path
) -> None:
    chat = Chat(server.client)
    await register_and_submit(chat, IMAGES)
    origin = str(server.client.make_url("/")).rstrip("/")
    login = ORGANISERS["a"][0]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(
                viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                locale="vi-VN", accept_downloads=True,
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            external: list[str] = []
            page.on("request", lambda r: external.append(r.url)
                    if not r.url.startswith(origin) else None)

            # -- log in --------------------------------------------------------------------
            await page.goto(origin + "/admin/")
            await page.get_by_label("Email").fill(login)
            await page.get_by_label("Mật khẩu").fill(PASSWORD)
            await shot(page, "1-login", full=False)
            await page.get_by_role("button", name="Đăng nhập").click()
            await expect(page.get_by_role("heading", name="Bài dự thi")).to_be_visible()
            await expect(page.locator(".entry", has_text=NAME)).to_have_count(1)
            await no_horizontal_scroll(page)
            await shot(page, "2-queue")

            # -- the submission: three pictures and a text answer ----------------------------
            await page.locator(".entry", has_text=NAME).click()
            await expect(page.get_by_role("heading", name=NAME)).to_be_visible()
            images = page.locator(".item img")
            await expect(images).to_have_count(3)
            for i in range(3):
                await expect(images.nth(i)).to_have_js_property("complete", True)
                assert await images.nth(i).evaluate("img => img.naturalWidth") == 360
            await no_horizontal_scroll(page)
            await shot(page, "3-submission")

            # -- reject step 2 with a reason ---------------------------------------------------
            second = page.locator(".item").nth(1)
            await second.get_by_text("✗ Trả lại…").click()
            await second.locator("textarea[name=reason]").fill(REASON)
            await second.scroll_into_view_if_needed()
            await shot(page, "4-reject", full=False)
            await second.get_by_role("button", name="Gửi lý do trả lại").click()
            await expect(page.get_by_text("Đã lưu quyết định.")).to_be_visible()
            await expect(page.locator(".item").nth(1).locator(".badge")).to_have_text("Trả lại")
            told = Chat.text(await chat.replies())
            assert f"Minh chứng “Bước 2/4” của bạn chưa được duyệt: {REASON}." in told

            # -- the participant sends it again; the organiser approves everything --------------
            assert "đã gửi đủ 4 minh chứng" in await chat.upload(
                screenshot("#283593", "MA QR CUA TOI - DAY DU"), "qr-moi.png")
            await page.reload()
            await expect(page.locator(".item img")).to_have_count(4)  # and the rejected one
            await page.get_by_role("button", name="✓ Duyệt tất cả 4 mục còn lại").click()
            await expect(page.get_by_text("Bài đã được duyệt.")).to_be_visible()
            await expect(page.locator(".head .badge")).to_have_text("Đã duyệt")
            await expect(page.locator(".certificate")).to_contain_text("Chờ người tham gia xác")
            await no_horizontal_scroll(page)
            await shot(page, "5-approved")

            # -- the participant confirms the name; the certificate is on the page ---------------
            told = Chat.text(await chat.replies())
            assert f"Tên in trên giấy chứng nhận: {PRINTED} — đúng chưa?" in told
            await chat.tap("Đúng")
            [row] = await server.certificates()
            assert row.status is CertificateStatus.ISSUED
            await page.reload()
            card = page.locator(".certificate")
            await expect(card).to_contain_text(PRINTED)
            await expect(card).to_contain_text(row.serial or "?")
            await expect(card).to_contain_text("Đã gửi vào khung chat")
            await card.scroll_into_view_if_needed()
            await no_horizontal_scroll(page)
            await shot(page, "6-certificate", full=False)
            async with page.expect_download() as download_info:
                await card.get_by_role("link", name="Tải giấy chứng nhận (PDF)").click()
            download = await download_info.value
            saved = tmp_path / (download.suggested_filename or "download.pdf")
            await download.save_as(saved)
            data = saved.read_bytes()
            assert data.startswith(b"%PDF")
            assert hashlib.sha256(data).hexdigest() == row.pdf_sha256
            assert download.suggested_filename == f"giay-chung-nhan-{row.serial}.pdf"

            # The certificate image itself, as the organiser opens it.
            await page.goto(origin + f"/admin/certificates/{row.id}/png")
            await shot(page, "7-certificate-image", full=False)

            # The public page its QR code opens, on the phone of whoever scans it.
            await card_free_context_check(browser, origin, row.serial or "")
            assert errors == []
            assert external == []
        finally:
            await browser.close()

    submission = await server.submission_of(chat)
    assert submission.status is SubmissionStatus.APPROVED
