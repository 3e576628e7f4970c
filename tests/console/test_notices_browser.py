"""District-level notices in a real headless Chromium at phone size (360×740): the banner on the
first page, the list, marking one handled. Screenshots go to tests/artifacts/. Skipped with
test_browser (imported below) when Chromium is missing."""

from __future__ import annotations

from playwright.async_api import async_playwright, expect

from tests.console.conftest import LOGINS, PASSWORD, Client, World
from tests.console.test_browser import ARGS, CHROMIUM, PHONE, no_horizontal_scroll, shot
from tests.console.test_notices import failing, health, open_rows


async def test_notices_on_a_phone(client: Client, world: World) -> None:
    await health(world, failing()).check_once()
    base = str(client.make_url("/admin/")).rstrip("/")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(viewport=PHONE, device_scale_factor=2,
                                                is_mobile=True, has_touch=True, locale="vi-VN")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(base + "/")
            await page.get_by_label("Email").fill(LOGINS["org_a"])
            await page.get_by_label("Mật khẩu").fill(PASSWORD)
            await page.get_by_role("button", name="Đăng nhập").click()
            await expect(page.get_by_role("heading", name="Bài dự thi")).to_be_visible()

            banner = page.locator(".notices-banner")
            await expect(banner).to_be_in_viewport()
            await expect(banner).to_contain_text("1 thông báo chưa xử lý")
            await no_horizontal_scroll(page)
            await shot(page, "phone-notices-1-banner", full=False)

            await banner.get_by_role("link").click()
            await expect(page.get_by_role("heading", name="Tình trạng kênh và thông báo")
                         ).to_be_visible()
            item = page.locator(".notice-item")
            await expect(item).to_have_count(1)
            await expect(item).to_contain_text("Telegram không gửi được tin đến Loa")
            await expect(item.locator(".chip")).to_have_text("Sự cố kênh")
            await expect(page.locator(".notices-banner")).to_have_count(0)
            await no_horizontal_scroll(page)
            await shot(page, "phone-notices-2-list")

            await item.get_by_role("button", name="✓ Đánh dấu đã xử lý").click()
            await expect(page.get_by_text("Đã đánh dấu thông báo là đã xử lý.")).to_be_visible()
            await expect(page.locator(".notice-item")).to_have_count(0)
            await expect(page.locator(".nav .count")).to_have_count(0)
            await shot(page, "phone-notices-3-handled")
            assert errors == []
        finally:
            await browser.close()
    assert await open_rows(world) == []
