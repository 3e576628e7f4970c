"""Report tables and their outputs: XLSX (openpyxl), CSV for Excel, and an aligned terminal table.

A `Table` is a title, typed columns and rows of plain values. Writers never compute: numbers
stay numbers in XLSX (a percent is a fraction shown with a % format, a date a real date), CSV is
UTF-8 with a byte-order mark so Excel opens Vietnamese correctly, and the terminal table pads
by the display width of the text. Headers are Vietnamese.
"""

from __future__ import annotations

import csv
import enum
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from bots.reports.cadres import REASON_TEXT, CadreRow, CitizenRow, UnitRow
from bots.reports.queries import NameRow, ProgressRow, WeekActivity, local_date

CSV_ENCODING = "utf-8-sig"  # the BOM tells Excel the file is UTF-8


class Kind(enum.Enum):
    TEXT = "text"
    INT = "int"
    PERCENT = "percent"  # a fraction: 0.4 is shown as 40,0%
    DECIMAL = "decimal"
    DATE = "date"


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    kind: Kind = Kind.TEXT
    width: int | None = None  # XLSX column width in characters (None: from the content)


@dataclass(frozen=True, slots=True)
class Table:
    title: str  # also the XLSX sheet name (shortened to Excel's 31 characters)
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    subtitle: str = ""  # one line under the title (campaign, wave, date)
    indent: tuple[int, ...] = field(default=())  # per row: depth of the tree (first text col)
    sheet: str = ""  # a shorter sheet name, when the title is long


# -- tables from report rows ----------------------------------------------------------------------


def _date(value: datetime | date | None) -> date | None:
    if isinstance(value, datetime):
        return local_date(value)
    return value


def progress_table(rows: Sequence[ProgressRow], title: str, subtitle: str = "") -> Table:
    columns = (
        Column("Mã", width=14),
        Column("Đơn vị", width=34),
        Column("Khu vực", width=18),
        Column("Số đoàn viên", Kind.INT),
        Column("Chỉ tiêu", Kind.INT),
        Column("Cách tính chỉ tiêu", width=12),
        Column("Đã đăng ký", Kind.INT),
        Column("Đã nộp", Kind.INT),
        Column("Đã duyệt", Kind.INT),
        Column("% đoàn viên (duyệt)", Kind.PERCENT),
        Column("% chỉ tiêu (duyệt)", Kind.PERCENT),
        Column("% đoàn viên (nộp)", Kind.PERCENT),
        Column("% chỉ tiêu (nộp)", Kind.PERCENT),
        Column("Ngày đạt 100% (duyệt)", Kind.DATE),
        Column("Hạng trong khu vực", Kind.INT),
        Column("Ngày đạt 100% (nộp)", Kind.DATE),
        Column("Hạng theo bài nộp", Kind.INT),
        Column("Ngày đạt chỉ tiêu", Kind.DATE),
        Column("Hoạt động trong tuần", Kind.INT),
    )
    body = tuple(
        (
            r.slug,
            r.name,
            r.area,
            r.members,
            r.quota,
            (r.quota_label if r.quota_label and r.quota_label.endswith("%") else None),
            r.registered,
            r.submitted,
            r.approved,
            r.approved_of_members,
            r.approved_of_quota,
            r.submitted_of_members,
            r.submitted_of_quota,
            _date(r.reached_members_at),
            r.rank_in_area,
            _date(r.reached_members_submitted_at),
            r.rank_in_area_submitted,
            _date(r.reached_quota_at),
            r.active_week,
        )
        for r in rows
    )
    base = min((r.depth for r in rows), default=0)
    return Table(
        title, columns, body, subtitle, tuple(r.depth - base for r in rows), sheet="Tiến độ"
    )


def names_table(rows: Sequence[NameRow], title: str, subtitle: str = "") -> Table:
    columns = (
        Column("STT", Kind.INT, 6),
        Column("Họ và tên", width=26),
        Column("Đơn vị", width=32),
        Column("Số điện thoại", width=15),
        Column("Email", width=28),
        Column("Ngày đăng ký", Kind.DATE),
        Column("Tình trạng", width=13),
        Column("Ngày nộp", Kind.DATE),
        Column("Ngày duyệt", Kind.DATE),
    )
    body = tuple(
        (
            n,
            r.name,
            r.unit,
            _phone(r.phone),
            r.email,
            _date(r.registered_at),
            r.status,
            _date(r.submitted_at),
            _date(r.approved_at),
        )
        for n, r in enumerate(rows, 1)
    )
    return Table(title, columns, body, subtitle, sheet="Danh sách")


def cadre_table(rows: Sequence[CadreRow], title: str, subtitle: str = "") -> Table:
    columns = (
        Column("Hạng", Kind.INT, 6),
        Column("Cán bộ", width=26),
        Column("Mã giới thiệu", width=14),
        Column("Loại", width=18),
        Column("Đơn vị", width=30),
        Column("Chỉ tiêu", Kind.INT),
        Column("Số người báo cáo", Kind.INT),
        Column("Được tính", Kind.INT),
        Column("Trùng cán bộ khác", Kind.INT),
        Column("Thiếu CCCD", Kind.INT),
        Column("Không thuộc đối tượng", Kind.INT),
        Column("Kích hoạt trước ngày", Kind.INT),
        Column("Chưa đủ hai tài khoản", Kind.INT),
        Column("Đạt chỉ tiêu", width=12),
        Column("Khen thưởng cá nhân", width=12),
    )
    body = tuple(
        (
            r.rank,
            r.name,
            r.code,
            r.kind,
            r.unit,
            r.threshold,
            r.claimed,
            r.counted,
            r.disputed,
            r.no_id,
            r.excluded,
            r.early,
            r.one_account,
            "Đạt" if r.meets_threshold else "Chưa đạt",
            "Đủ điều kiện" if r.individual_award else "",
        )
        for r in rows
    )
    return Table(title, columns, body, subtitle, sheet="Cán bộ")


def unit_award_table(rows: Sequence[UnitRow], title: str, subtitle: str = "") -> Table:
    columns = (
        Column("Mã", width=14),
        Column("Đơn vị", width=34),
        Column("Số cán bộ", Kind.INT),
        Column("Người dân được tính", Kind.INT),
        Column("Cán bộ đạt chỉ tiêu", Kind.INT),
        Column("Bình quân mỗi cán bộ", Kind.DECIMAL),
        Column("Khen thưởng tập thể", width=12),
    )
    body = tuple(
        (
            r.slug,
            r.name,
            r.cadres,
            r.counted,
            r.meeting_threshold,
            r.average,
            "Đủ điều kiện" if r.collective_award else "",
        )
        for r in rows
    )
    base = min((r.depth for r in rows), default=0)
    return Table(
        title, columns, body, subtitle, tuple(r.depth - base for r in rows), sheet="Tập thể"
    )


def citizens_table(rows: Sequence[CitizenRow], title: str, subtitle: str = "") -> Table:
    columns = (
        Column("STT", Kind.INT, 6),
        Column("Họ và tên người dân", width=26),
        Column("Số điện thoại", width=15),
        Column("Đối tượng", width=18),
        Column("Mức VNeID", width=14),
        Column("Tài khoản DVC", width=10),
        Column("Ngày kích hoạt", Kind.DATE),
        Column("Cán bộ hướng dẫn", width=26),
        Column("Đơn vị", width=30),
        Column("Ngày báo cáo", Kind.DATE),
        Column("Kết quả", width=28),
    )
    body = tuple(
        (
            n,
            r.name,
            _phone(r.phone),
            r.category,
            r.level,
            r.portal,
            r.activated_on,
            r.cadre,
            r.unit,
            _date(r.reported_at),
            REASON_TEXT.get(r.reason, r.reason),
        )
        for n, r in enumerate(rows, 1)
    )
    return Table(title, columns, body, subtitle, sheet="Người dân")


def weekly_table(rows: Sequence[WeekActivity], names: dict[str, str], title: str) -> Table:
    columns = (
        Column("Đơn vị", width=34),
        Column("Tuần từ ngày", Kind.DATE),
        Column("Người hoạt động", Kind.INT),
        Column("Số tin nhắn", Kind.INT),
    )
    body = tuple((names.get(r.slug, r.slug), r.week_start, r.active, r.messages) for r in rows)
    return Table(title, columns, body, sheet="Hoạt động")


def _phone(value: str | None) -> str | None:
    """+84912345678 → 0912345678, as people write it."""
    if value and value.startswith("+84"):
        return "0" + value[3:]
    return value


# -- XLSX -----------------------------------------------------------------------------------------

_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")
_FORMATS = {
    Kind.INT: "#,##0",
    Kind.PERCENT: "0.0%",
    Kind.DECIMAL: "#,##0.0",
    Kind.DATE: "DD/MM/YYYY",
}


def _sheet_name(table: Table, used: set[str]) -> str:
    base = _SHEET_BAD.sub(" ", table.sheet or table.title).strip()[:31] or "Báo cáo"
    name, n = base, 2
    while name.lower() in used:
        suffix = f" ({n})"
        name, n = base[: 31 - len(suffix)] + suffix, n + 1
    used.add(name.lower())
    return name


def write_xlsx(tables: Sequence[Table], target: Path | str | IO[bytes]) -> None:
    """One sheet per table: title (row 1), subtitle (row 2), a bold header row (row 4, frozen,
    filterable), numbers as numbers with Vietnamese-friendly formats, widths from the content."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    book = Workbook()
    book.remove(book.active)
    used: set[str] = set()
    header_fill = PatternFill("solid", fgColor="DDEBF7")
    for table in tables:
        sheet = book.create_sheet(_sheet_name(table, used))
        sheet.cell(row=1, column=1, value=table.title).font = Font(bold=True, size=13)
        if table.subtitle:
            sheet.cell(row=2, column=1, value=table.subtitle).font = Font(italic=True)
        header_row = 4  # always: whoever reads the sheet back finds the header on row 4
        for col, column in enumerate(table.columns, 1):
            cell = sheet.cell(row=header_row, column=col, value=column.header)
            cell.font = Font(bold=True)
            cell.fill = header_fill
            cell.alignment = Alignment(wrap_text=True, vertical="center")
        for n, row in enumerate(table.rows):
            depth = table.indent[n] if n < len(table.indent) else 0
            for col, (column, value) in enumerate(zip(table.columns, row, strict=True), 1):
                cell = sheet.cell(row=header_row + 1 + n, column=col, value=_cell(value))
                if isinstance(value, str) and value.startswith("="):
                    cell.data_type = "s"  # a name typed in a chat is text, never a formula
                fmt = _FORMATS.get(column.kind)
                if fmt is not None:
                    cell.number_format = fmt
                if depth and column.header == "Đơn vị":
                    cell.alignment = Alignment(indent=depth)
        for col, column in enumerate(table.columns, 1):
            sheet.column_dimensions[get_column_letter(col)].width = _width(table, col - 1, column)
        sheet.freeze_panes = sheet.cell(row=header_row + 1, column=1)
        if table.rows:
            last = get_column_letter(len(table.columns))
            sheet.auto_filter.ref = f"A{header_row}:{last}{header_row + len(table.rows)}"
    if not tables:
        book.create_sheet("Báo cáo")
    book.save(target)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "Có" if value else "Không"
    return value


def _width(table: Table, index: int, column: Column) -> float:
    if column.width is not None:
        return column.width
    longest = max(
        [len(column.header) * 0.6, *(len(_text(row[index], column)) for row in table.rows)],
        default=8,
    )
    return max(8.0, min(40.0, longest + 2))


# -- CSV ------------------------------------------------------------------------------------------


def _text(value: Any, column: Column) -> str:
    """A value as people read it (CSV and the terminal): 40,0% → "40.0", dates d/m/y."""
    if value is None:
        return ""
    if column.kind is Kind.PERCENT:
        return f"{value * 100:.1f}"
    if column.kind is Kind.DECIMAL:
        return f"{value:.1f}"
    if isinstance(value, datetime):
        value = local_date(value)
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    if isinstance(value, bool):
        return "Có" if value else "Không"
    return str(value)


def _csv_text(value: Any, column: Column) -> str:
    text = _text(value, column)
    # A text cell starting like a formula would run when Excel opens the file (CSV injection):
    # names and answers come from chats.
    if column.kind is Kind.TEXT and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _csv_header(column: Column) -> str:
    return f"{column.header} (%)" if column.kind is Kind.PERCENT and "%" not in column.header \
        else column.header


def write_csv(table: Table, target: Path | str | IO[str], *, bom: bool = True) -> None:
    """The table as CSV (comma-separated, UTF-8 with a BOM unless `bom=False`); percents as
    numbers of percent (40.0), dates dd/mm/yyyy."""
    if isinstance(target, (str, Path)):
        with open(target, "w", encoding=CSV_ENCODING if bom else "utf-8", newline="") as handle:
            _csv_rows(table, handle)
        return
    if bom:
        target.write("\ufeff")
    _csv_rows(table, target)


def _csv_rows(table: Table, handle: IO[str]) -> None:
    writer = csv.writer(handle)
    writer.writerow([_csv_header(c) for c in table.columns])
    for row in table.rows:
        writer.writerow([_csv_text(v, c) for v, c in zip(row, table.columns, strict=True)])


def csv_bytes(table: Table) -> bytes:
    out = io.StringIO()
    write_csv(table, out)
    return out.getvalue().encode("utf-8")


# -- the terminal ---------------------------------------------------------------------------------


def display_width(text: str) -> int:
    """Columns a terminal gives `text` (NFC Vietnamese is one column a letter; wide CJK two;
    combining marks none)."""
    width = 0
    for ch in unicodedata.normalize("NFC", text):
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap


def render_text(table: Table, *, skip: Iterable[str] = ()) -> str:
    """An aligned text table: title, subtitle, header, a rule, rows (numbers right-aligned,
    the tree indented)."""
    skipped = set(skip)
    keep = [i for i, c in enumerate(table.columns) if c.header not in skipped]
    columns = [table.columns[i] for i in keep]
    cells: list[list[str]] = []
    for n, row in enumerate(table.rows):
        depth = table.indent[n] if n < len(table.indent) else 0
        line = []
        for i in keep:
            column = table.columns[i]
            text = _text(row[i], column)
            if column.kind is Kind.PERCENT and text:
                text += "%"
            if depth and column.header == "Đơn vị":
                text = "  " * depth + text
            line.append(text)
        cells.append(line)
    widths = [
        max([display_width(c.header), *(display_width(line[k]) for line in cells)])
        for k, c in enumerate(columns)
    ]
    right = [c.kind is not Kind.TEXT for c in columns]
    out = [table.title]
    if table.subtitle:
        out.append(table.subtitle)
    out.append("")
    header = zip(columns, widths, right, strict=True)
    out.append("  ".join(_pad(c.header, w, r) for c, w, r in header).rstrip())
    out.append("  ".join("-" * w for w in widths))
    for line in cells:
        padded = (_pad(t, w, r) for t, w, r in zip(line, widths, right, strict=True))
        out.append("  ".join(padded).rstrip())
    if not cells:
        out.append("(không có dữ liệu)")
    return "\n".join(out) + "\n"


__all__ = [
    "CSV_ENCODING",
    "Column",
    "Kind",
    "Table",
    "cadre_table",
    "citizens_table",
    "csv_bytes",
    "display_width",
    "names_table",
    "progress_table",
    "render_text",
    "unit_award_table",
    "weekly_table",
    "write_csv",
    "write_xlsx",
]
