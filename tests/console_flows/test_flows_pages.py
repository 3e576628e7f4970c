"""/admin/kich-ban on the real server: who sees which district's flows (404 for another
subtree), who may upload and reload (403 for everyone but a top-level admin), uploads checked in
a temporary copy and refused with every problem's position (nothing changes), a good upload
applied everywhere, the reload button, and the vendored Mermaid served only to organisers."""

from __future__ import annotations

import re
from html import unescape

import pytest
from aiohttp import FormData
from sqlalchemy import select

from bots.console.flows_pages import MAX_UPLOAD
from bots.records.models import AuditEntry
from bots.reload import read_current
from tests.console_flows.conftest import Site

FLOW_IDS = re.compile(r'<section class="card flow" id="flow-([a-z_]+)"')


def flows_on(html: str) -> list[str]:
    return FLOW_IDS.findall(html)


async def get(site: Site, path: str, status: int = 200) -> str:
    response = await site.client.get(path, allow_redirects=False)
    text = await response.text()
    assert response.status == status, text[:800]
    return unescape(text)


def upload_form(csrf: str, data: bytes, *, target: str = "flows.yaml", action: str = "apply",
                name: str = "flows.yaml") -> FormData:
    form = FormData()
    form.add_field("csrf", csrf)
    form.add_field("target", target)
    form.add_field("action", action)
    form.add_field("file", data, filename=name, content_type="application/x-yaml")
    return form


async def audit_actions(site: Site) -> list[tuple[str, str]]:
    async with site.runtime.db.reads() as session:
        rows = (await session.scalars(
            select(AuditEntry).where(AuditEntry.action.like("flows_%")).order_by(AuditEntry.id)
        )).all()
    return [(r.actor, r.action) for r in rows]


# -- who sees what --------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "district", "flows", "hidden"), [
    ("org_a", "tan-phu", ["dang_ky", "cong_dan_so"], "binh-tan"),
    ("reviewer", "tan-phu", ["dang_ky", "cong_dan_so"], "binh-tan"),  # a unit of Tân Phú
    ("admin_a", "tan-phu", ["dang_ky", "cong_dan_so"], "binh-tan"),
    ("org_b", "binh-tan", ["dang_ky", "cong_dan_so", "hoi_dap_binh_tan"], "tan-phu"),
])
async def test_organisers_see_the_flows_of_their_district_only(
    site: Site, who: str, district: str, flows: list[str], hidden: str
) -> None:
    await site.sign_in(who)
    html = await get(site, "/admin/kich-ban")
    assert flows_on(html) == flows
    assert "khao_sat_cu" not in html  # used by no district: for top-level admins only
    assert "Tải lên tệp kịch bản mới" not in html and "ap-dung" not in html
    assert "✓ Đạt kiểm tra" in html and site.runtime.version[:12] in html
    assert flows_on(await get(site, f"/admin/kich-ban?district={district}")) == flows
    await get(site, f"/admin/kich-ban?district={hidden}", 404)
    await get(site, "/admin/kich-ban?district=khong-co", 404)


async def test_a_top_level_admin_sees_every_district_and_the_unused_flow(site: Site) -> None:
    await site.sign_in("admin")
    html = await get(site, "/admin/kich-ban?district=binh-tan")
    assert flows_on(html) == ["dang_ky", "cong_dan_so", "hoi_dap_binh_tan", "khao_sat_cu"]
    assert "Kịch bản chưa đơn vị nào dùng" in html
    assert "Tải lên tệp kịch bản mới" in html
    assert '<option value="districts/binh-tan.yaml">' in html
    assert "Giống hệt phiên bản đang chạy." in html
    # The live version's check status, with its warning and where it is.
    assert "1 cảnh báo" in html and "flows.yaml:62:3" in html
    # The diagram sources are the steps' own (Vietnamese) words, escaped in the page.
    assert "stateDiagram-v2" in html and "Bạn muốn hỏi gì?" in html
    assert "direction TB" in html


async def test_the_page_allows_inline_styles_for_mermaid_only(site: Site) -> None:
    await site.sign_in("org_a")
    flows = await site.client.get("/admin/kich-ban")
    queue = await site.client.get("/admin/")
    assert "style-src 'self' 'unsafe-inline'" in flows.headers["Content-Security-Policy"]
    assert "script-src 'self';" in flows.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in queue.headers["Content-Security-Policy"]


async def test_mermaid_is_served_locally_to_signed_in_organisers(site: Site) -> None:
    response = await site.client.get("/admin/static/vendor/mermaid.min.js",
                                     allow_redirects=False)
    assert response.status == 303  # signed out: to the login page
    await site.sign_in("reviewer")
    response = await site.client.get("/admin/static/vendor/mermaid.min.js")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    body = await response.read()
    assert len(body) > 1_000_000 and b"mermaid" in body[:2000]
    assert (await site.client.get("/admin/static/vendor/mermaid.LICENSE")).status == 404
    assert (await site.client.get("/admin/static/vendor/..%2Fconsole.css")).status == 404


@pytest.mark.parametrize("who", ["org_a", "reviewer", "admin_a", "org_b"])
async def test_only_a_top_level_admin_uploads_or_reloads(site: Site, who: str) -> None:
    csrf = await site.sign_in(who)
    before = site.config.read_bytes()
    version = site.runtime.version
    good = before.replace(b"Email c\xe1\xbb\xa7a b\xe1\xba\xa1n?", b"Email?")
    response = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(csrf, good))
    assert response.status == 403
    assert "Chỉ tài khoản quản trị của đơn vị cấp cao nhất" in await response.text()
    response = await site.client.post("/admin/kich-ban/ap-dung", data={"csrf": csrf})
    assert response.status == 403
    assert site.config.read_bytes() == before and site.runtime.version == version
    assert await audit_actions(site) == []


async def test_posts_need_the_csrf_token(site: Site) -> None:
    await site.sign_in("admin")
    response = await site.client.post("/admin/kich-ban/ap-dung", data={"csrf": "x" * 64})
    assert response.status == 403
    response = await site.client.post(
        "/admin/kich-ban/tai-len", data=upload_form("wrong", site.config.read_bytes()))
    assert response.status == 403


# -- uploads --------------------------------------------------------------------------------------


BROKEN_TARGET = (b"          - {title: Tham gia th\xe1\xbb\xad th\xc3\xa1ch, goto: cong_dan_so}",
                 b"          - {title: Tham gia th\xe1\xbb\xad th\xc3\xa1ch, goto: cong_dan_soo}")


async def test_a_broken_upload_is_refused_with_positions_and_nothing_changes(site: Site) -> None:
    csrf = await site.sign_in("admin")
    before = site.config.read_bytes()
    version = site.runtime.version
    # A YAML syntax error and, in another upload, a flow target that does not exist.
    syntax = before.replace(b"    title: \xc4\x90\xc4\x83ng k\xc3\xbd th\xc3\xb4ng tin",
                            b"    title: [\xc4\x90\xc4\x83ng k\xc3\xbd", 1)
    assert syntax != before
    response = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(csrf, syntax))
    assert response.status == 400
    html = unescape(await response.text())
    assert "chưa hợp lệ nên chưa thay flows.yaml; không có gì thay đổi" in html
    line = before.split(b"\n").index("    title: Đăng ký thông tin".encode()) + 1
    # The parser notices the unclosed list on the next line, as `loa check` says too.
    assert f'<code class="where">flows.yaml:{line + 1}:10</code>' in html
    assert "danh sách trong [ ] chưa đóng" in html and "Gợi ý: văn bản có dấu phẩy" in html

    target = before.replace(*BROKEN_TARGET)
    assert target != before
    line = before.split(b"\n").index(BROKEN_TARGET[0]) + 1
    response = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(csrf, target))
    assert response.status == 400
    html = unescape(await response.text())
    assert re.search(rf'<code class="where">flows\.yaml:{line}:\d+</code>', html), html
    assert "cong_dan_soo" in html and "có phải ý bạn là 'cong_dan_so'?" in html

    assert site.config.read_bytes() == before
    assert site.runtime.version == version
    current = await read_current(site.runtime.db)
    assert current is not None and current.version == version
    assert await audit_actions(site) == []


async def test_a_broken_included_file_is_reported_in_that_file(site: Site) -> None:
    csrf = await site.sign_in("admin")
    included = site.base / "districts" / "binh-tan.yaml"
    before = included.read_bytes()
    broken = before.replace(b"goto: dia_chi", b"goto: dia_chii")
    line = before.split(b"\n").index(next(
        x for x in before.split(b"\n") if b"goto: dia_chi" in x)) + 1
    response = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(
        csrf, broken, target="districts/binh-tan.yaml", name="binh-tan.yaml"))
    assert response.status == 400
    html = unescape(await response.text())
    assert f"districts/binh-tan.yaml:{line}:" in html
    assert included.read_bytes() == before


async def test_uploads_that_cannot_be_checked(site: Site) -> None:
    csrf = await site.sign_in("admin")
    before = site.config.read_bytes()
    big = before + b"#" * MAX_UPLOAD
    response = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(csrf, big))
    assert response.status == 413
    assert "Tệp lớn quá" in await response.text()
    response = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(
        csrf, before, target="../etc/passwd"))
    assert response.status == 400
    assert "không thuộc bộ kịch bản" in unescape(await response.text())
    response = await site.client.post("/admin/kich-ban/tai-len",
                                      data={"csrf": csrf, "action": "apply"})
    assert response.status == 400
    assert "Bạn chưa chọn tệp" in await response.text()
    binary = b"\x00\x01\x02" * 10
    response = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(csrf, binary))
    assert response.status == 400
    assert "tệp không phải văn bản" in unescape(await response.text())
    assert site.config.read_bytes() == before


async def test_a_channel_without_its_secret_is_refused_before_anything_is_written(
    site: Site,
) -> None:
    csrf = await site.sign_in("admin")
    before = site.config.read_bytes()
    with_telegram = before.replace(
        b"        channels:\n          webchat: {}\n        units:",
        b"        channels:\n          webchat: {}\n"
        b"          telegram: {token: $LOA_TEST_MISSING_TOKEN}\n        units:", 1)
    assert with_telegram != before
    response = await site.client.post("/admin/kich-ban/tai-len",
                                      data=upload_form(csrf, with_telegram))
    assert response.status == 400
    html = unescape(await response.text())
    assert "LOA_TEST_MISSING_TOKEN" in html
    assert site.config.read_bytes() == before


async def test_a_good_upload_is_checked_then_applied_everywhere(site: Site) -> None:
    csrf = await site.sign_in("admin")
    before = site.config.read_bytes()
    old = site.runtime.version
    changed = before.replace("Email của bạn?".encode(), "Địa chỉ email của bạn?".encode())
    assert changed != before

    checked = await site.client.post("/admin/kich-ban/tai-len",
                                     data=upload_form(csrf, changed, action="check"))
    assert checked.status == 200
    assert "hợp lệ (chưa áp dụng)" in unescape(await checked.text())
    assert site.config.read_bytes() == before and site.runtime.version == old

    applied = await site.client.post("/admin/kich-ban/tai-len", data=upload_form(csrf, changed))
    html = unescape(await applied.text())
    assert applied.status == 200, html[:2000]
    assert site.config.read_bytes() == changed
    new = site.runtime.version
    assert new != old and f"Phiên bản {new[:12]} đang chạy trên mọi máy chủ" in html
    current = await read_current(site.runtime.db)
    assert current is not None and current.version == new
    admin = f"organiser:{site.world.organisers['admin']}"
    assert await audit_actions(site) == [(admin, "flows_uploaded"), (admin, "flows_reloaded")]
    # The new question is what the bot asks now; the archive holds the old version.
    step = site.runtime.flows.compiled.flows["dang_ky"].by_id["email"]  # type: ignore[union-attr]
    assert "Địa chỉ email của bạn?" in str(step.prompt)
    assert site.runtime.archive.main_file(old) is not None


async def test_the_reload_button_applies_the_files_on_disk_or_refuses_them(site: Site) -> None:
    csrf = await site.sign_in("admin")
    old = site.runtime.version
    before = site.config.read_bytes()
    site.config.write_bytes(before.replace(*BROKEN_TARGET))
    html = await get(site, "/admin/kich-ban")
    assert "Tệp trên máy chủ đang có lỗi" in html and "cong_dan_soo" in html
    response = await site.client.post("/admin/kich-ban/ap-dung", data={"csrf": csrf})
    assert response.status == 400
    html = unescape(await response.text())
    assert "Kịch bản mới chưa được áp dụng: còn lỗi" in html and "cong_dan_soo" in html
    assert site.runtime.version == old

    site.config.write_bytes(before.replace("Email của bạn?".encode(), b"Email?"))
    html = await get(site, "/admin/kich-ban")
    assert "chưa áp dụng" in html
    response = await site.client.post("/admin/kich-ban/ap-dung", data={"csrf": csrf})
    assert response.status == 200
    assert site.runtime.version != old
    assert "Đã áp dụng." in unescape(await response.text())
    assert "Giống hệt phiên bản đang chạy." in await get(site, "/admin/kich-ban")


@pytest.mark.parametrize("path", ["/admin/kich-ban", "/admin/don-vi", "/admin/bao-cao",
                                  "/admin/bao-cao/tai-ve.xlsx", "/admin/static/vendor/x.js"])
async def test_signed_out_visitors_are_sent_to_the_login_page(site: Site, path: str) -> None:
    response = await site.client.get(path, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/admin/login?next=")
    for post in ("/admin/kich-ban/tai-len", "/admin/kich-ban/ap-dung", "/admin/don-vi"):
        response = await site.client.post(post, data={"csrf": "x"}, allow_redirects=False)
        assert response.status == 303
