"""The flows page in a real headless Chromium: every diagram of the district is drawn by the
vendored Mermaid (an <svg> replaces each source), no request leaves 127.0.0.1, no script error
and no Content-Security-Policy violation. Screenshots in tests/artifacts/."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.console.conftest import LOGINS, PASSWORD
from tests.console_flows.conftest import Site
from tests.required import ARGS, CHROMIUM, require_chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"

require_chromium()

from playwright.async_api import Page, async_playwright, expect  # noqa: E402


async def _log_in(page: Page, base: str, who: str) -> None:
    await page.goto(base + "/admin/login")
    await page.get_by_label("Email").fill(LOGINS[who])
    await page.get_by_label("Mật khẩu").fill(PASSWORD)
    await page.get_by_role("button", name="Đăng nhập").click()
    await expect(page.get_by_role("heading", name="Bài dự thi")).to_be_visible()


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_mermaid_diagrams_render_locally(site: Site, size: str) -> None:
    base = str(site.client.make_url("/")).rstrip("/")
    phone = size == "phone"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 360, "height": 740} if phone else {"width": 1280, "height": 900},
                device_scale_factor=2 if phone else 1, is_mobile=phone, has_touch=phone,
                locale="vi-VN",
            )
            page = await context.new_page()
            hosts: list[str] = []
            page.on("request", lambda r: hosts.append(urlsplit(r.url).hostname or r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error"
                    and not m.text.startswith("Failed to load resource") else None)
            failed: list[str] = []  # (the browser's own /favicon.ico aside)
            page.on("response", lambda r: failed.append(r.url) if r.status >= 400
                    and not r.url.endswith("/favicon.ico") else None)

            await _log_in(page, base, "org_b")  # Bình Tân's organiser
            await page.get_by_role("link", name="Kịch bản").click()
            await expect(page.get_by_role("heading", name="Kịch bản trò chuyện")).to_be_visible()
            await expect(page.locator("body")).to_have_attribute("data-diagrams", "done",
                                                                 timeout=30_000)
            flows = page.locator("section.flow")
            # Bình Tân uses its menu (dang_ky → cong_dan_so) and its own Hỏi đáp; not the
            # flow nobody uses.
            assert await flows.evaluate_all("els => els.map(e => e.id)") == [
                "flow-dang_ky", "flow-cong_dan_so", "flow-hoi_dap_binh_tan"]
            for n in range(3):
                svg = flows.nth(n).locator(".diagram svg")
                await expect(svg).to_have_count(1)
                box = await svg.bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 50
            # Labels are the steps' own words, Vietnamese intact.
            await expect(flows.nth(2).locator("svg")).to_contain_text("Bạn muốn hỏi gì?")
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= await page.evaluate("window.innerWidth")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"flows-{size}.png"), full_page=True)
        finally:
            await browser.close()
    assert set(hosts) == {"127.0.0.1"}, hosts
    assert errors == [] and failed == []


async def test_an_admin_uploads_a_broken_file_then_a_good_one(site: Site, tmp_path: Path) -> None:
    """The upload form in the browser: a broken file is refused with its position, nothing
    changes; the fixed file is applied and the page says so."""
    base = str(site.client.make_url("/")).rstrip("/")
    before = site.config.read_bytes()
    old = site.runtime.version
    broken = tmp_path / "flows.yaml"
    broken.write_bytes(before.replace(b"goto: cong_dan_so}", b"goto: cong_dan_soo}"))
    fixed = tmp_path / "flows-sua.yaml"
    fixed.write_bytes(before.replace("Email của bạn?".encode(), "Email của bạn là gì?".encode()))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900},
                                          locale="vi-VN")
            await _log_in(page, base, "admin")
            await page.get_by_role("link", name="Kịch bản").click()
            await expect(page.get_by_text("Giống hệt phiên bản đang chạy.")).to_be_visible()
            await page.get_by_label("Tệp .yaml").set_input_files(str(broken))
            await page.get_by_role("button", name="Kiểm tra và áp dụng", exact=True).click()
            alert = page.locator("section.alert.error")
            await expect(alert).to_contain_text("không có gì thay đổi")
            line = before.split(b"\n").index(next(
                x for x in before.split(b"\n") if b"goto: cong_dan_so}" in x)) + 1
            await expect(alert.locator("code.where").first).to_have_text(re.compile(
                rf"^flows\.yaml:{line}:\d+$"))
            await expect(alert).to_contain_text("có phải ý bạn là 'cong_dan_so'?")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "flows-upload-refused.png"))
            assert site.config.read_bytes() == before and site.runtime.version == old

            await page.get_by_label("Tệp .yaml").set_input_files(str(fixed))
            await page.get_by_role("button", name="Kiểm tra và áp dụng", exact=True).click()
            await expect(page.locator("section.alert.ok")).to_contain_text("đang chạy trên mọi")
            await expect(page.locator("body")).to_have_attribute("data-diagrams", "done",
                                                                 timeout=30_000)
            await page.screenshot(path=str(ARTIFACTS / "flows-upload-applied.png"))
        finally:
            await browser.close()
    assert site.config.read_bytes() == fixed.read_bytes()
    assert site.runtime.version != old


async def test_a_district_admin_imports_units_in_the_browser(site: Site, tmp_path: Path) -> None:
    base = str(site.client.make_url("/")).rstrip("/")
    bad = tmp_path / "don-vi.csv"
    bad.write_text("Mã;Tên đơn vị;Số đoàn viên;Chỉ tiêu\ntan-quy;Đoàn phường Tân Quý;40;50%\n"
                   "son ky;Đoàn phường Sơn Kỳ;ba mươi;10\n", encoding="utf-8")
    good = tmp_path / "don-vi-sua.csv"
    good.write_text("Mã;Tên đơn vị;Số đoàn viên;Chỉ tiêu\ntan-quy;Đoàn phường Tân Quý;40;50%\n"
                    "son-ky;Đoàn phường Sơn Kỳ;30;10\n", encoding="utf-8")
    old = site.runtime.version
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 360, "height": 740},
                                          device_scale_factor=2, is_mobile=True, locale="vi-VN")
            await _log_in(page, base, "admin_a")
            await page.goto(base + "/admin/don-vi")
            await page.get_by_label("Tệp danh sách").set_input_files(str(bad))
            await page.get_by_role("button", name="Kiểm tra và áp dụng").click()
            await expect(page.locator("section.alert.error")).to_contain_text(
                "don-vi.csv, dòng 3, cột 'mã': mã đơn vị 'son ky' không hợp lệ")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "units-refused.png"), full_page=True)
            await page.get_by_label("Tệp danh sách").set_input_files(str(good))
            await page.get_by_role("button", name="Kiểm tra và áp dụng").click()
            await expect(page.locator("section.alert.ok")).to_contain_text(
                "Đã áp dụng danh sách mới")
            # tan-quy lost its area
            await expect(page.locator("section.result")).to_contain_text("thêm 1, sửa 1, bỏ 1")
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= await page.evaluate("window.innerWidth")
            await page.screenshot(path=str(ARTIFACTS / "units-applied.png"), full_page=True)
        finally:
            await browser.close()
    assert site.runtime.version != old
