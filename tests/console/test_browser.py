"""The console in a real headless Chromium, at desktop (1280×800) and phone (360×740) size:
log in, open a submission with images, zoom one, reject an item with a reason, approve the
rest. Screenshots go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.records.models import EvidenceStatus, SubmissionStatus
from tests.console.conftest import LOGINS, PASSWORD, Client, World
from tests.required import ARGS, CHROMIUM, require_chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}

require_chromium()

from playwright.async_api import Page, async_playwright, expect  # noqa: E402


async def shot(page: Page, name: str, full: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=full)


async def no_horizontal_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = await page.evaluate("window.innerWidth")
    assert width <= viewport, f"page is {width}px wide in a {viewport}px viewport"


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_review_in_the_browser(client: Client, world: World, size: str) -> None:
    base = str(client.make_url("/admin/")).rstrip("/")
    phone = size == "phone"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(
                viewport=PHONE if phone else DESKTOP,
                device_scale_factor=2 if phone else 1,
                is_mobile=phone,
                has_touch=phone,
                locale="vi-VN",
            )
            page = await context.new_page()
            external: list[str] = []
            page.on("request", lambda r: external.append(r.url)
                    if not r.url.startswith(base.rsplit("/admin", 1)[0]) else None)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # -- log in ---------------------------------------------------------------------
            await page.goto(base + "/")
            await expect(page.get_by_role("heading", name="Đăng nhập")).to_be_visible()
            await shot(page, f"{size}-1-login", full=False)
            await page.get_by_label("Email").fill(LOGINS["org_a"])
            await page.get_by_label("Mật khẩu").fill(PASSWORD)
            await page.get_by_role("button", name="Đăng nhập").click()
            await expect(page.get_by_role("heading", name="Bài dự thi")).to_be_visible()
            await expect(page.locator(".entry")).to_have_count(3)
            await no_horizontal_scroll(page)
            await shot(page, f"{size}-2-queue")

            # -- open An's submission ----------------------------------------------------------
            await page.locator(".entry", has_text="Nguyễn Văn An").click()
            await expect(page.get_by_role("heading", name="Nguyễn Văn An")).to_be_visible()
            images = page.locator(".item img")
            await expect(images).to_have_count(2)
            for i in range(2):
                await expect(images.nth(i)).to_have_js_property("complete", True)
                assert await images.nth(i).evaluate("img => img.naturalWidth") == 360
            await no_horizontal_scroll(page)
            await shot(page, f"{size}-3-submission")

            # Tap the first picture: it opens full size over the page.
            await images.first.click()
            box = page.locator(".lightbox")
            await expect(box).to_be_visible()
            await expect(box.locator("img")).to_have_js_property("complete", True)
            await shot(page, f"{size}-4-zoom", full=False)
            if phone:
                await box.locator(".close").click()
            else:
                await page.keyboard.press("Escape")
            await expect(box).to_be_hidden()

            # -- reject the VNeID picture with a reason ---------------------------------------
            first = page.locator(".item").first
            if phone:
                await first.get_by_text("✗ Trả lại…").click()
                await first.get_by_role("button", name="Ảnh bị mờ, không đọc được").click()
                reason = first.locator("textarea[name=reason]")
                await expect(reason).to_have_value("Ảnh bị mờ, không đọc được")
                await reason.fill("Ảnh bị mờ, bạn chụp lại rõ phần họ tên nhé")
            else:
                await page.keyboard.press("r")  # the first pending item is selected on load
                reason = first.locator("textarea[name=reason]")
                await expect(reason).to_be_focused()
                await page.keyboard.type("Ảnh bị mờ, bạn chụp lại rõ phần họ tên nhé")
            await shot(page, f"{size}-5-reject", full=False)
            await first.get_by_role("button", name="Gửi lý do trả lại").click()
            await expect(page.get_by_text("Đã lưu quyết định.")).to_be_visible()
            await expect(page.locator(".item").first.locator(".badge")).to_have_text("Trả lại")

            # -- approve the rest -----------------------------------------------------------------
            if phone:
                await page.get_by_role("button", name="✓ Duyệt tất cả 2 mục còn lại").click()
                await expect(page.get_by_text("Đã lưu quyết định.")).to_be_visible()
            else:
                for _ in range(2):  # "a" approves the selected item; the next one is selected
                    await expect(page.locator(".item.focused[data-pending]")).to_have_count(1)
                    await page.keyboard.press("a")
                    await page.wait_for_load_state()
                    await expect(page.get_by_text("Đã lưu quyết định.")).to_be_visible()
            await expect(page.locator(".item .badge", has_text="Đạt")).to_have_count(2)
            await expect(page.locator(".head .badge")).to_have_text("Chờ gửi lại")
            await no_horizontal_scroll(page)
            await shot(page, f"{size}-6-decided")

            # -- the participant page -----------------------------------------------------------
            await page.get_by_role("link", name="Nguyễn Văn An").click()
            await expect(page.get_by_role("heading", name="Trò chuyện")).to_be_visible()
            await no_horizontal_scroll(page)
            await shot(page, f"{size}-7-participant")
            assert errors == []
            assert external == []
        finally:
            await browser.close()

    statuses = [i.status for i in await world.items("an")]
    assert statuses == [EvidenceStatus.REJECTED, EvidenceStatus.ACCEPTED,
                        EvidenceStatus.ACCEPTED]
    assert (await world.submission("an")).status is SubmissionStatus.DRAFT
    assert [e.payload for e in world.notified] == ["reject"]
    data = dict(world.notified[0].data)
    assert data["criterion"] == "vneid"
    assert data["reason"] == "Ảnh bị mờ, bạn chụp lại rõ phần họ tên nhé"
