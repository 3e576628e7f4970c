"""The flows page in a real headless Chromium: every diagram of the district is drawn by the
vendored Mermaid (an <svg> replaces each source), no request leaves 127.0.0.1, no script error
and no Content-Security-Policy violation. Screenshots in tests/artifacts/."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.console.conftest import LOGINS, PASSWORD
from tests.console_flows.conftest import Site

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing (CI must install Debian's chromium)", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)

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
