"""Names typed in a chat reach the downloads: they stay text in Excel, never a formula."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from bots.reports.exports import Column, Kind, Table, csv_bytes, write_xlsx

NAMES = ["=HYPERLINK(\"http://x.example\",\"Bấm\")", "+84 gọi", "-1+2", "@SUM(A1)", "Nguyễn An"]


def table() -> Table:
    return Table("Cán bộ", (Column("Cán bộ"), Column("Được tính", Kind.INT)),
                 tuple((name, n) for n, name in enumerate(NAMES)))


def test_xlsx_cells_are_text() -> None:
    out = io.BytesIO()
    write_xlsx([table()], out)
    sheet = load_workbook(io.BytesIO(out.getvalue()))["Cán bộ"]
    cells = [sheet.cell(row=5 + n, column=1) for n in range(len(NAMES))]
    assert [c.value for c in cells] == NAMES
    assert {c.data_type for c in cells} == {"s"}


def test_csv_cells_cannot_start_a_formula() -> None:
    rows = list(csv.reader(io.StringIO(csv_bytes(table()).decode("utf-8-sig"))))
    assert [r[0] for r in rows[1:]] == ["'" + n for n in NAMES[:4]] + ["Nguyễn An"]
    assert [r[1] for r in rows[1:]] == [str(n) for n in range(len(NAMES))]
