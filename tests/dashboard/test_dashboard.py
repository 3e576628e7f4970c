"""/admin/bao-cao: the figures on the page and in the downloads are those of bots/reports on a
seeded database; every route keeps to the organiser's subtree (404 outside it) and exports are
for admins and organisers (403 for reviewers), each one an audit row."""

from __future__ import annotations

import csv
import io
import re
from html import unescape

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from bots.console.dashboard import _percent
from bots.records.models import AuditEntry
from bots.reports import cadres, daily, queries
from tests.dashboard.conftest import Board

ROW = re.compile(r'<tr data-slug="([^"]+)"[^>]*>(.*?)</tr>', re.S)
CELL = re.compile(r"<t[hd][^>]*>(.*?)</t[hd]>", re.S)


def table(html: str) -> dict[str, list[str]]:
    """The progress table of the page: slug → its cells as text."""
    body = html.split('id="progress"', 1)[1].split("</table>", 1)[0]
    return {slug: [unescape(c).strip() for c in CELL.findall(cells)]
            for slug, cells in ROW.findall(body)}


async def page(board: Board, query: str, status: int = 200) -> str:
    response = await board.client.get("/admin/bao-cao" + query, allow_redirects=False)
    text = await response.text()
    assert response.status == status, text[:500]
    return text


@pytest.mark.parametrize(("who", "org", "wave"), [
    ("org_a", "quan-a", None),
    ("org_a", "p3", "Đợt 1"),
    ("admin", "tinh", None),
    ("admin", "quan-b", "Đợt 2"),
])
async def test_the_table_is_the_progress_query(board: Board, who: str, org: str,
                                               wave: str | None) -> None:
    await board.sign_in(who)
    query = f"?campaign=thu_thach&org={org}" + (f"&wave={wave}" if wave else "")
    html = await page(board, query)
    shown = table(html)
    rows = await queries.progress(board.db, "thu_thach", org=org, wave=wave, as_of=board.now)
    assert list(shown) == [r.slug for r in rows]
    for r in rows:
        cells = shown[r.slug]
        assert cells[0] == r.name
        assert cells[2:7] == [str(r.members or ""), str(r.quota or ""), str(r.registered),
                              str(r.submitted), str(r.approved)]
        assert cells[7:9] == [_percent(r.approved_of_members), _percent(r.approved_of_quota)]
        assert cells[10] == str(r.rank_in_area or "")
    head = rows[0]
    assert f'data-figure="approved">{head.approved}<' in html
    # The bars are the node's children (itself when it has none), against their quota.
    bars = re.findall(r'<span class="label">([^<]+)</span><span class="figure">([^<]+)</span>',
                      html)
    children = [r for r in rows if r.parent == org] or [head]
    assert [unescape(label) for label, _ in bars] == [r.name for r in children]
    for (_, figure), r in zip(bars, children, strict=True):
        assert unescape(figure).startswith(f"{r.approved}/" if r.quota or r.members
                                           else str(r.approved))
    # The line ends at the running totals, which are the table's.
    days = await daily.daily_progress(board.db, "thu_thach", org=org, wave=wave)
    if days:
        assert days[-1].approved_total == head.approved
        assert f"{days[-1].approved_total} người đã được duyệt" in unescape(html)


async def test_weekly_activity_is_the_weekly_query(board: Board) -> None:
    await board.sign_in("org_a")
    html = unescape(await page(board, "?campaign=thu_thach"))
    activity = await queries.weekly_active(board.db, org="quan-a", weeks=8, until=board.now,
                                           depth=0)
    assert activity  # the seed has weeks 07/08 and 14/08
    for row in activity:
        assert f"tuần từ {row.week_start:%d/%m}: {row.active} người" in html


async def test_cadre_leaderboard_and_awards(board: Board) -> None:
    await board.sign_in("org_sc")
    html = unescape(await page(board, "?campaign=vneid"))
    rules = cadres.CadreRules.for_campaign(board.bundle.campaigns, "vneid")
    ranked = await cadres.cadre_board(board.db, rules, org="sc")
    leaders = re.findall(r'<td class="num">(\d+)</td><th scope="row">([^<]+)</th>',
                         html.split('id="cadres"', 1)[1].split("</table>", 1)[0])
    assert [(int(rank), name) for rank, name in leaders] == [(r.rank, r.name)
                                                              for r in ranked[:20]]
    awards = [r.name for r in ranked if r.individual_award]
    assert awards == ["Lò Văn Một"]
    section = html.split("Đề nghị khen thưởng", 1)[1]
    assert "Lò Văn Một" in section and "Quàng Thị Hai" not in section
    # A campaign without cadre reports has no such section.
    assert "Bảng xếp hạng cán bộ" not in unescape(await page(board, "?campaign=thu_thach"))


@pytest.mark.parametrize(("who", "query"), [
    ("org_a", "?campaign=thu_thach&org=quan-b"),  # a sibling district
    ("org_a", "?campaign=thu_thach&org=tinh"),  # above its own
    ("org_a", "?campaign=thu_thach&org=sc"),  # another province
    ("org_b", "?campaign=thu_thach&org=p1"),  # a unit of the sibling
    ("reviewer_a", "?campaign=thu_thach&org=quan-a"),  # a reviewer of p1 only
    ("admin", "?campaign=vneid&org=x1"),  # another top-level organisation
    ("org_a", "?campaign=khong-co"),
    ("org_a", "?campaign=thu_thach&wave=Đợt 9"),
    ("org_a", "?campaign=thu_thach&org=khong-co"),
])
async def test_other_subtrees_do_not_exist(board: Board, who: str, query: str) -> None:
    await board.sign_in(who)
    await page(board, query, 404)
    for suffix in ("/tai-ve.xlsx", "/tai-ve.csv"):
        response = await board.client.get("/admin/bao-cao" + suffix + query)
        assert response.status == 404
    async with board.db.reads() as session:
        assert not (await session.scalars(select(AuditEntry))).all()


async def test_a_reviewer_sees_its_units_and_cannot_download(board: Board) -> None:
    await board.sign_in("reviewer_a")
    html = await page(board, "?campaign=thu_thach")
    assert list(table(html)) == ["p1"]
    assert "Tải Excel" not in html
    for suffix in ("/tai-ve.xlsx", "/tai-ve.csv"):
        response = await board.client.get(f"/admin/bao-cao{suffix}?campaign=thu_thach&org=p1")
        assert response.status == 403


async def test_signed_out_goes_to_the_login_page(board: Board) -> None:
    response = await board.client.get("/admin/bao-cao/tai-ve.csv?campaign=thu_thach",
                                      allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/admin/login?next=")


async def test_csv_download_with_vietnamese_headers_is_audited(board: Board) -> None:
    await board.sign_in("org_a")
    response = await board.client.get("/admin/bao-cao/tai-ve.csv?campaign=thu_thach&wave=Đợt 1")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert 'filename="bao-cao-thu_thach-quan-a-dot1-' in response.headers["Content-Disposition"]
    body = await response.read()
    assert body.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with the BOM
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][:9] == ["Mã", "Đơn vị", "Khu vực", "Số đoàn viên", "Chỉ tiêu",
                           "Cách tính chỉ tiêu", "Đã đăng ký", "Đã nộp", "Đã duyệt"]
    want = await queries.progress(board.db, "thu_thach", org="quan-a", wave="Đợt 1",
                                  as_of=board.now)
    assert [(r[0], int(r[7]), int(r[8])) for r in rows[1:]] == [
        (r.slug, r.submitted, r.approved) for r in want]
    async with board.db.reads() as session:
        entries = (await session.scalars(select(AuditEntry))).all()
    assert [(e.actor, e.action) for e in entries] == [
        (f"organiser:{board.organisers['org_a']}", "exported")]
    assert entries[0].detail | {"ip": ""} == {
        "report": "bao-cao", "format": "csv", "org": "quan-a", "campaign": "thu_thach",
        "wave": "Đợt 1", "rows": len(want), "ip": ""}


async def test_xlsx_download_has_every_sheet(board: Board) -> None:
    await board.sign_in("org_sc")
    response = await board.client.get("/admin/bao-cao/tai-ve.xlsx?campaign=vneid")
    assert response.status == 200
    book = load_workbook(io.BytesIO(await response.read()))
    assert book.sheetnames == ["Tiến độ", "Theo ngày", "Hoạt động", "Cán bộ", "Khen cá nhân",
                               "Tập thể"]
    rules = cadres.CadreRules.for_campaign(board.bundle.campaigns, "vneid")
    ranked = await cadres.cadre_board(board.db, rules, org="sc")
    sheet = book["Cán bộ"]
    assert [c.value for c in sheet[4]][:2] == ["Hạng", "Cán bộ"]
    assert [(row[0].value, row[1].value) for row in sheet.iter_rows(min_row=5)] == [
        (r.rank, r.name) for r in ranked]
    awards = [row[1].value for row in book["Khen cá nhân"].iter_rows(min_row=5)]
    assert awards == [r.name for r in ranked if r.individual_award]
