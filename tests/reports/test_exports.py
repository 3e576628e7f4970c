"""XLSX, CSV and terminal tables of the seeded reports: Vietnamese headers, the report's own
numbers as numbers, Excel-friendly CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path

from openpyxl import load_workbook

from bots.records import Database
from bots.reports import exports
from bots.reports.cadres import CadreRules, cadre_board, unit_board
from bots.reports.organisations import sync_organisations
from bots.reports.queries import progress
from flows.compiler import CompiledBundle
from tests.reports.seed import seed_cadres, seed_progress

AS_OF = datetime(2023, 8, 16, 5, tzinfo=UTC)


async def _progress_table(db: Database, compiled: CompiledBundle) -> exports.Table:
    await sync_organisations(db, compiled)
    await seed_progress(db)
    rows = await progress(db, "thu_thach", org="quan-a", as_of=AS_OF)
    return exports.progress_table(rows, "Tiến độ theo đơn vị", "Thử thách mẫu · Quận Đoàn A")


async def test_xlsx_keeps_numbers_as_numbers(
    db: Database, compiled: CompiledBundle, tmp_path: Path
) -> None:
    table = await _progress_table(db, compiled)
    rules = CadreRules.for_campaign(compiled.campaigns, "vneid")
    await seed_cadres(db)
    cadres = exports.cadre_table(await cadre_board(db, rules), "Cán bộ hướng dẫn")
    units = exports.unit_award_table(await unit_board(db, rules), "Tập thể")
    path = tmp_path / "bao-cao.xlsx"
    exports.write_xlsx([table, cadres, units], path)

    book = load_workbook(path)
    assert book.sheetnames == ["Tiến độ", "Cán bộ", "Tập thể"]
    sheet = book["Tiến độ"]
    assert sheet["A1"].value == "Tiến độ theo đơn vị"
    assert sheet["A2"].value == "Thử thách mẫu · Quận Đoàn A"
    header = [c.value for c in sheet[4]]
    assert header[:9] == ["Mã", "Đơn vị", "Khu vực", "Số đoàn viên", "Chỉ tiêu",
                          "Cách tính chỉ tiêu", "Đã đăng ký", "Đã nộp", "Đã duyệt"]
    assert all(c.font.bold for c in sheet[4])
    assert sheet.freeze_panes == "A5"
    body = {row[0].value: row for row in sheet.iter_rows(min_row=5)}
    assert list(body) == ["quan-a", "p1", "p2", "p3", "t1"]
    col = {name: i for i, name in enumerate(header)}
    p3 = body["p3"]
    assert [p3[col[h]].value for h in ("Số đoàn viên", "Chỉ tiêu", "Đã đăng ký", "Đã nộp",
                                       "Đã duyệt")] == [5, 2, 5, 3, 1]
    assert p3[col["Cách tính chỉ tiêu"]].value == "40%"
    share = p3[col["% đoàn viên (duyệt)"]]
    assert share.value == 0.2 and share.number_format == "0.0%"
    assert p3[col["Đã duyệt"]].number_format == "#,##0"
    reached = body["p2"][col["Ngày đạt 100% (duyệt)"]]
    assert reached.value == datetime(2023, 8, 14) and reached.number_format == "DD/MM/YYYY"
    assert body["p2"][col["Hạng trong khu vực"]].value == 1
    assert body["p1"][col["Hạng trong khu vực"]].value == 2
    assert body["quan-a"][col["Hoạt động trong tuần"]].value == 4
    assert body["p1"][col["Đơn vị"]].alignment.indent == 1  # the tree shows
    assert sheet.column_dimensions["B"].width == 34

    cadre_sheet = book["Cán bộ"]
    first = [c.value for c in cadre_sheet[4]], [c.value for c in cadre_sheet[5]]
    assert first[0][:8] == ["Hạng", "Cán bộ", "Mã giới thiệu", "Loại", "Đơn vị", "Chỉ tiêu",
                            "Số người báo cáo", "Được tính"]
    assert first[1][:8] == [1, "Lò Văn Một", "CB01", "Cán bộ, công chức", "Đoàn xã 1", 20, 57,
                            51]
    assert first[1][-2:] == ["Đạt", "Đủ điều kiện"]
    unit_rows = [[c.value for c in row] for row in book["Tập thể"].iter_rows(min_row=5)]
    assert unit_rows[0] == ["sc", "Huyện đoàn SC", 4, 80, 2, 20.0, "Đủ điều kiện"]


async def test_csv_has_a_bom_and_the_same_numbers(
    db: Database, compiled: CompiledBundle, tmp_path: Path
) -> None:
    table = await _progress_table(db, compiled)
    path = tmp_path / "tien-do.csv"
    exports.write_csv(table, path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    header = rows[0]
    assert header[1] == "Đơn vị" and "% đoàn viên (duyệt)" in header
    p3 = next(r for r in rows if r[0] == "p3")
    assert p3[1] == "Đoàn phường 3"
    assert p3[header.index("Đã duyệt")] == "1"
    assert p3[header.index("% đoàn viên (duyệt)")] == "20.0"
    p2 = next(r for r in rows if r[0] == "p2")
    assert p2[header.index("Ngày đạt 100% (duyệt)")] == "14/08/2023"
    assert exports.csv_bytes(table).startswith("\ufeff".encode())


def test_the_terminal_table_lines_up_vietnamese_text() -> None:
    table = exports.Table(
        "Thử",
        (exports.Column("Đơn vị"), exports.Column("Đã duyệt", exports.Kind.INT),
         exports.Column("Tỷ lệ", exports.Kind.PERCENT), exports.Column("Ngày", exports.Kind.DATE)),
        (("Đoàn phường Hòa Thạnh", 1234, 0.5, date(2023, 8, 14)), ("Khối", 7, None, None)),
        indent=(0, 1),
    )
    text = exports.render_text(table)
    lines = text.splitlines()
    assert lines[0] == "Thử"
    header, rule, first, second = lines[2:6]
    assert header.startswith("Đơn vị") and rule.startswith("-" * len("Đoàn phường Hòa Thạnh"))
    # numbers are right-aligned under their header, whatever the diacritics before them
    end = header.index("Đã duyệt") + len("Đã duyệt")
    assert first[:end].endswith("1234") and second[:end].endswith("7")
    assert second.startswith("  Khối")  # the tree's indent
    assert "50.0%" in first and "14/08/2023" in first
    assert exports.display_width("Hòa Thạnh") == 9
    empty = exports.render_text(exports.Table("Trống", (exports.Column("A"),), ()))
    assert "(không có dữ liệu)" in empty
