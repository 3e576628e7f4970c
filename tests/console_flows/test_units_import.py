"""Units import: `loa units import FILE --org SLUG` and the console's /admin/don-vi — CSV and
XLSX read with their header found without diacritics, quotas as numbers or percents, every
problem by the organiser's row and column, nothing written unless the whole deployment passes
check, and the console applying the new list (admins only, inside their subtree)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
from aiohttp import FormData
from openpyxl import Workbook
from sqlalchemy import select

from bots.records.models import AuditEntry
from bots.units_import import UnitsImportError, import_units, read_units
from tests.console_flows.conftest import DEPLOYMENT, Site

REPO = Path(__file__).resolve().parents[2]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(DEPLOYMENT, tmp_path / "conf")
    return tmp_path / "conf" / "flows.yaml"


def units_csv(config: Path) -> Path:
    return config.parent / "data" / "tan-phu-units.csv"


def xlsx(rows: list[list[object]], percent_cells: tuple[str, ...] = ()) -> bytes:
    """A workbook as an organiser makes it: a title, a blank row, then the table."""
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    for ref in percent_cells:
        sheet[ref].number_format = "0%"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


CSV_SEMICOLON = (
    "DANH SÁCH ĐƠN VỊ QUẬN TÂN PHÚ\n"
    ";;;;\n"
    "Ma;Ten don vi;Khu vuc;So doan vien;Chi tieu\n"
    "tan-quy;Đoàn phường Tân Quý;Khối phường;1.040;50%\n"
    "phu-tho-hoa;Đoàn phường Phú Thọ Hòa;Khối phường;300;120\n"
    ";Đoàn phường Hiệp Tân;Khối phường;214;40%\n"
).encode()


def test_csv_with_a_title_and_plain_headers_replaces_the_list(config: Path) -> None:
    outcome = import_units(config, "tan-phu", CSV_SEMICOLON, "don-vi.csv")
    assert outcome.ok and outcome.written, outcome.problems
    assert units_csv(config).read_text("utf-8") == (
        "mã,tên đơn vị,khu vực,số đoàn viên,chỉ tiêu\n"
        "tan-quy,Đoàn phường Tân Quý,Khối phường,1040,50%\n"
        "phu-tho-hoa,Đoàn phường Phú Thọ Hòa,Khối phường,300,120\n"
        "doan-phuong-hiep-tan,Đoàn phường Hiệp Tân,Khối phường,214,40%\n"
    )
    assert outcome.added == ["doan-phuong-hiep-tan"]
    assert outcome.changed == ["tan-quy", "phu-tho-hoa"] and outcome.removed == []
    assert any("dòng 6 → doan-phuong-hiep-tan" in note for note in outcome.notes)


def test_xlsx_with_percent_cells(config: Path) -> None:
    data = xlsx([
        ["Danh sách đơn vị trực thuộc"],
        [],
        ["Mã đơn vị", "Tên đơn vị", "Cụm thi đua", "Số lượng đoàn viên", "Chỉ tiêu"],
        ["tan-quy", "Đoàn phường Tân Quý", "Khối phường", 40, 0.5],
        ["phu-tho-hoa", "Đoàn phường Phú Thọ Hòa", "Khối phường", 30.0, 12],
        ["thpt-tay-thanh", "Chi đoàn Trường THPT Tây Thạnh", "Khối trường học", 120, 0.8],
    ], percent_cells=("E4", "E6"))
    outcome = import_units(config, "tan-phu", data, "don-vi.xlsx")
    assert outcome.ok and outcome.written, outcome.problems
    lines = units_csv(config).read_text("utf-8").splitlines()
    assert lines[1:] == [
        "tan-quy,Đoàn phường Tân Quý,Khối phường,40,50%",
        "phu-tho-hoa,Đoàn phường Phú Thọ Hòa,Khối phường,30,12",
        "thpt-tay-thanh,Chi đoàn Trường THPT Tây Thạnh,Khối trường học,120,80%",
    ]


def test_row_problems_name_the_organisers_rows_and_nothing_is_written(config: Path) -> None:
    before = units_csv(config).read_bytes()
    data = xlsx([
        ["Danh sách"],
        ["mã", "tên đơn vị", "khu vực", "số đoàn viên", "chỉ tiêu"],
        ["tan-quy", "Đoàn phường Tân Quý", "Khối phường", 40, "50%"],
        ["Phu Tho", "Đoàn phường Phú Thọ", "Khối phường", 30, 10],
        ["son-ky", "Đoàn phường Sơn Kỳ", "Khối phường", "ba mươi", 10],
        ["tan-thanh", "Đoàn phường Tân Thành", "Khối phường", 20, "150%"],
        ["tan-quy", "Đoàn phường Tân Quý 2", "", 10, 5],
    ])
    outcome = import_units(config, "tan-phu", data, "don-vi.xlsx")
    assert not outcome.ok and not outcome.written
    assert outcome.problems == [
        "don-vi.xlsx, dòng 7, cột 'mã': mã đơn vị 'tan-quy' bị lặp lại (đã có ở dòng 3) — mỗi "
        "đơn vị một mã riêng",
        "don-vi.xlsx, dòng 4, cột 'mã': mã đơn vị 'phu tho' không hợp lệ — mã chỉ gồm chữ "
        "thường không dấu, số, - và _ (VD: phu-tho)",
        "don-vi.xlsx, dòng 5, cột 'số đoàn viên': số đoàn viên 'ba mươi' không phải số — viết "
        "số nguyên, VD: 5891 hoặc 5.891",
        "don-vi.xlsx, dòng 6, cột 'chỉ tiêu': chỉ tiêu '150%' vượt quá 100% — chỉ tiêu phần "
        "trăm tính trên số đoàn viên",
    ]
    assert units_csv(config).read_bytes() == before


def test_a_list_that_breaks_the_deployment_is_refused(config: Path) -> None:
    """an-lac is Bình Tân's: a unit slug names one node in the whole deployment."""
    before = units_csv(config).read_bytes()
    data = "mã,tên đơn vị\ntan-quy,Đoàn phường Tân Quý\nan-lac,Đoàn phường An Lạc\n".encode()
    outcome = import_units(config, "tan-phu", data, "ds.csv")
    assert not outcome.ok
    assert any("an-lac" in p for p in outcome.problems), outcome.problems
    assert units_csv(config).read_bytes() == before


def test_merge_keeps_the_units_not_in_the_file(config: Path) -> None:
    data = "mã,tên đơn vị,số đoàn viên,chỉ tiêu\nson-ky,Đoàn phường Sơn Kỳ,50,20\n".encode()
    outcome = import_units(config, "tan-phu", data, "them.csv", merge=True)
    assert outcome.ok and outcome.written
    slugs = [line.split(",")[0] for line in units_csv(config).read_text("utf-8").splitlines()]
    assert slugs == ["mã", "tan-quy", "phu-tho-hoa", "son-ky"]
    assert outcome.added == ["son-ky"] and outcome.removed == []


def test_a_node_without_a_units_file_gets_the_line_to_add(config: Path) -> None:
    before = {p: p.read_bytes() for p in config.parent.rglob("*") if p.is_file()}
    data = "mã,tên đơn vị\nan-lac,Đoàn phường An Lạc\nbinh-tri-dong,Đoàn phường BTĐ\n".encode()
    outcome = import_units(config, "binh-tan", data, "bt.csv")
    assert outcome.ok and not outcome.written
    assert outcome.target.units_path is None
    assert outcome.target.yaml_file.name == "binh-tan.yaml"
    assert outcome.yaml_line == "units: data/binh-tan-units.csv"
    assert outcome.csv_bytes.decode().splitlines()[1] == "an-lac,Đoàn phường An Lạc,,,"
    assert any("an-lac, binh-tri-dong đang viết trong children của 'binh-tan'" in note
               for note in outcome.notes)
    assert {p: p.read_bytes() for p in config.parent.rglob("*") if p.is_file()} == before


def test_unreadable_files_and_unknown_organisations(config: Path) -> None:
    with pytest.raises(UnitsImportError, match="có phải ý bạn là 'tan-phu'"):
        import_units(config, "tan-phuu", b"ma,ten\nx,y\n", "a.csv")
    with pytest.raises(UnitsImportError, match="không tìm thấy dòng tiêu đề"):
        read_units("họ tên,số điện thoại\nAn,0901\n".encode(), "a.csv")
    with pytest.raises(UnitsImportError, match=r"Excel 97-2003 \(\.xls\)"):
        read_units(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "cu.xls")
    with pytest.raises(UnitsImportError, match="không mở được tệp Excel"):
        read_units(b"PK\x03\x04 not really a workbook", "hong.xlsx")
    with pytest.raises(UnitsImportError, match="không lưu bằng bảng mã UTF-8"):
        read_units("mã,tên đơn vị\nx,Đoàn".encode("cp1258", errors="replace") + b"\xff", "a.csv")


def test_the_command(tmp_path: Path, config: Path) -> None:
    good = tmp_path / "ds.csv"
    good.write_bytes(CSV_SEMICOLON)
    bad = tmp_path / "sai.csv"
    bad.write_text("mã,tên đơn vị,chỉ tiêu\nBAD CODE,X,abc\n", encoding="utf-8")

    def loa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bots.cli", "units", "import", *args,
                               "--config", str(config)], cwd=REPO, capture_output=True,
                              text=True, timeout=60)

    refused = loa(str(bad), "--org", "tan-phu")
    assert refused.returncode == 1
    assert "sai.csv, dòng 2, cột 'mã': mã đơn vị 'bad code' không hợp lệ" in refused.stderr
    assert "Chưa ghi gì" in refused.stderr
    dry = loa(str(good), "--org", "tan-phu", "--dry-run")
    assert dry.returncode == 0 and "Hợp lệ (chưa ghi) 3 đơn vị" in dry.stdout
    assert "hiep-tan" not in units_csv(config).read_text("utf-8")
    done = loa(str(good), "--org", "tan-phu")
    assert done.returncode == 0, done.stderr
    assert "Đã ghi 3 đơn vị của Quận Đoàn Tân Phú vào data/tan-phu-units.csv" in done.stdout
    assert "loa reload" in done.stdout
    assert "hiep-tan" in units_csv(config).read_text("utf-8")
    # Tân Phú's units again, for Bình Tân: each code names one unit in the whole deployment.
    taken = loa(str(good), "--org", "binh-tan")
    assert taken.returncode == 1
    assert "mã 'tan-quy' đã là mã của Đoàn phường Tân Quý" in taken.stderr
    fresh = tmp_path / "bt.csv"
    fresh.write_text("mã,tên đơn vị\nan-lac,Đoàn phường An Lạc\nmoi,Đoàn phường Mới\n",
                     encoding="utf-8")
    other = loa(str(fresh), "--org", "binh-tan")
    assert other.returncode == 0, other.stderr
    assert "units: data/binh-tan-units.csv" in other.stdout
    assert "mã,tên đơn vị,khu vực,số đoàn viên,chỉ tiêu" in other.stdout


# -- the console ----------------------------------------------------------------------------------


def units_form(csrf: str, org: str, data: bytes, name: str, action: str = "apply",
               merge: bool = False) -> FormData:
    form = FormData()
    form.add_field("csrf", csrf)
    form.add_field("org", org)
    form.add_field("action", action)
    if merge:
        form.add_field("merge", "1")
    form.add_field("file", data, filename=name,
                   content_type=XLSX_TYPE if name.endswith(".xlsx") else "text/csv")
    return form


async def test_a_district_admin_imports_its_units_and_they_go_live(site: Site) -> None:
    csrf = await site.sign_in("admin_a")
    page = await site.client.get("/admin/don-vi")
    assert page.status == 200
    assert '<option value="tan-phu" selected>' in await page.text()
    old = site.runtime.version
    data = xlsx([
        ["Mã", "Tên đơn vị", "Khu vực", "Số đoàn viên", "Chỉ tiêu"],
        ["tan-quy", "Đoàn phường Tân Quý", "Khối phường", 40, 0.5],
        ["phu-tho-hoa", "Đoàn phường Phú Thọ Hòa", "Khối phường", 30, 10],
        ["son-ky", "Đoàn phường Sơn Kỳ", "Khối phường", 55, 0.4],
    ], percent_cells=("E2", "E4"))
    checked = await site.client.post("/admin/don-vi",
                                     data=units_form(csrf, "tan-phu", data, "dv.xlsx", "check"))
    assert checked.status == 200
    assert "Hợp lệ (chưa ghi) 3 đơn vị" in unescape(await checked.text())
    assert site.runtime.version == old

    response = await site.client.post("/admin/don-vi",
                                      data=units_form(csrf, "tan-phu", data, "dv.xlsx"))
    html = unescape(await response.text())
    assert response.status == 200, html[:2000]
    assert "Đã ghi 3 đơn vị của Quận Đoàn Tân Phú vào data/tan-phu-units.csv: thêm 1" in html
    assert "Đã áp dụng danh sách mới" in html
    assert site.runtime.version != old
    compiled = site.runtime.flows.compiled  # type: ignore[union-attr]
    assert compiled.unit_names["son-ky"] == "Đoàn phường Sơn Kỳ"
    assert "son-ky,Đoàn phường Sơn Kỳ,Khối phường,55,40%" in (
        site.base / "data" / "tan-phu-units.csv").read_text("utf-8")
    async with site.runtime.db.reads() as session:
        actions = [(e.actor, e.action, e.detail.get("org")) for e in (await session.scalars(
            select(AuditEntry).where(AuditEntry.action.in_(["units_imported", "flows_reloaded"]))
            .order_by(AuditEntry.id))).all()]
    actor = f"organiser:{site.world.organisers['admin_a']}"
    assert actions == [(actor, "units_imported", "tan-phu"), (actor, "flows_reloaded", None)]


async def test_console_import_errors_list_the_rows(site: Site) -> None:
    csrf = await site.sign_in("admin_a")
    before = (site.base / "data" / "tan-phu-units.csv").read_bytes()
    data = "mã,tên đơn vị,số đoàn viên,chỉ tiêu\ntan-quy,Tân Quý,40,abc\n".encode()
    response = await site.client.post("/admin/don-vi",
                                      data=units_form(csrf, "tan-phu", data, "dv.csv"))
    assert response.status == 400
    html = unescape(await response.text())
    assert "dv.csv, dòng 2, cột 'chỉ tiêu': chỉ tiêu 'abc' không hợp lệ" in html
    assert (site.base / "data" / "tan-phu-units.csv").read_bytes() == before


@pytest.mark.parametrize("who", ["org_a", "reviewer"])
async def test_only_admins_import_units(site: Site, who: str) -> None:
    csrf = await site.sign_in(who)
    assert (await site.client.get("/admin/don-vi")).status == 403
    response = await site.client.post(
        "/admin/don-vi", data=units_form(csrf, "tan-phu", CSV_SEMICOLON, "dv.csv"))
    assert response.status == 403


async def test_an_admin_imports_only_inside_its_subtree(site: Site) -> None:
    csrf = await site.sign_in("admin_a")
    before = (site.base / "flows.yaml").read_bytes()
    response = await site.client.post(
        "/admin/don-vi", data=units_form(csrf, "binh-tan", CSV_SEMICOLON, "dv.csv"))
    assert response.status == 404
    response = await site.client.post(
        "/admin/don-vi", data=units_form(csrf, "tp-hcm", CSV_SEMICOLON, "dv.csv"))
    assert response.status == 404
    assert (site.base / "flows.yaml").read_bytes() == before
