"""The dashboard in a real headless Chromium: log in as Quận Đoàn A's organiser, open the
reports, see the server-drawn charts, download the Excel export and read it back with openpyxl;
no request leaves 127.0.0.1. Screenshots in tests/artifacts/."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from openpyxl import load_workbook

from bots.reports import queries
from tests.dashboard.conftest import LOGINS, PASSWORD, Board
from tests.required import ARGS, CHROMIUM, require_chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"

require_chromium()

from playwright.async_api import async_playwright, expect  # noqa: E402


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_dashboard_and_excel_download(board: Board, tmp_path: Path, size: str) -> None:
    base = str(board.client.make_url("/")).rstrip("/")
    phone = size == "phone"
    expected = await queries.progress(board.db, "thu_thach", org="quan-a", as_of=board.now)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 360, "height": 740} if phone else {"width": 1280, "height": 900},
                device_scale_factor=2 if phone else 1, is_mobile=phone, has_touch=phone,
                locale="vi-VN", accept_downloads=True,
            )
            page = await context.new_page()
            hosts: list[str] = []
            page.on("request", lambda r: hosts.append(urlsplit(r.url).hostname or r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            await page.goto(base + "/admin/login")
            await page.get_by_label("Email").fill(LOGINS["org_a"])
            await page.get_by_label("Mật khẩu").fill(PASSWORD)
            await page.get_by_role("button", name="Đăng nhập").click()
            await expect(page.get_by_role("heading", name="Bài dự thi")).to_be_visible()
            await page.get_by_role("link", name="Báo cáo").click()
            await expect(page.get_by_role("heading", name="Báo cáo tiến độ")).to_be_visible()

            # Quận Đoàn A's own figures, its units as bars, the running total, the weeks.
            head = expected[0]
            assert head.slug == "quan-a"
            await expect(page.locator("[data-figure=approved]")).to_have_text(str(head.approved))
            await expect(page.locator(".chart-bars .label")).to_have_text(
                [r.name for r in expected if r.parent == "quan-a"])
            await expect(page.locator("svg.chart-line polyline")).to_have_count(2)
            await expect(page.locator("svg.chart-columns rect.column")).to_have_count(8)
            rows = page.locator("#progress tbody tr")
            await expect(rows).to_have_count(len(expected))
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= await page.evaluate("window.innerWidth")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"dashboard-{size}.png"), full_page=True)

            async with page.expect_download() as waiting:
                await page.get_by_role("link", name="Tải Excel (.xlsx)").click()
            download = await waiting.value
            assert download.suggested_filename.startswith("bao-cao-thu_thach-quan-a-")
            saved = tmp_path / download.suggested_filename
            await download.save_as(saved)
        finally:
            await browser.close()
    assert set(hosts) == {"127.0.0.1"}, hosts
    assert errors == []

    book = load_workbook(saved)
    sheet = book["Tiến độ"]
    header = [c.value for c in sheet[4]]
    assert header[:9] == ["Mã", "Đơn vị", "Khu vực", "Số đoàn viên", "Chỉ tiêu",
                          "Cách tính chỉ tiêu", "Đã đăng ký", "Đã nộp", "Đã duyệt"]
    body = [[c.value for c in row] for row in sheet.iter_rows(min_row=5)]
    assert [(r[0], r[7], r[8]) for r in body] == [
        (r.slug, r.submitted, r.approved) for r in expected]
    assert "Theo ngày" in book.sheetnames and "Hoạt động" in book.sheetnames
    days = [[c.value for c in row] for row in book["Theo ngày"].iter_rows(min_row=5)]
    assert days[-1][3:] == [head.submitted, head.approved]  # running totals end at the table's
