"""A units CSV (`units: data/x.csv` on an organisation node) read into child nodes.

Columns: mã, tên đơn vị, khu vực, số đoàn viên, chỉ tiêu — header names matched without
diacritics, `,` `;` or tab separated, UTF-8 with or without BOM (Excel's "CSV UTF-8"). Counts
may use Vietnamese thousands separators (5.891); a quota is a number or a percent of members.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path
from typing import Any

from flows import schema
from flows.problems import NodePath, Pos, Positions, Problem, Severity, Span
from flows.suggest import fold, slugify
from flows.yaml_reader import Unreadable, decode_text, read_bytes

_CSV_COLUMNS = {
    "ma": "slug", "ma don vi": "slug", "ma dv": "slug", "slug": "slug",
    "ten don vi": "name", "ten": "name", "don vi": "name", "ten dv": "name",
    "khu vuc": "area", "cum": "area", "cum thi dua": "area",
    "so doan vien": "members", "doan vien": "members", "so dv": "members",
    "so luong doan vien": "members",
    "chi tieu": "quota",
}
_INT = re.compile(r"^\d{1,3}(?:[.,\s]\d{3})+$|^\d+$")
_PERCENT = re.compile(r"^(\d{1,3})(?:[.,](\d+))?\s*%$")


def _csv_header(cell: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", " ", fold(cell)).strip()


def _field_starts(line: str, delimiter: str) -> list[int]:
    """1-based columns where each field of a one-line CSV record starts."""
    starts = [1]
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            starts.append(index + 2)
    return starts


def _count(text: str) -> int | None:
    text = text.strip()
    if not _INT.match(text):
        return None
    return int(re.sub(r"[.,\s]", "", text))


def load_units(
    csv_path: Path, shown: str, node_path: NodePath, positions: Positions,
    problems: list[Problem], raws: list[tuple[Path, str, bytes]]
) -> dict[str, Any] | None:
    """The rows of a units CSV as child org nodes, with their positions."""
    try:
        raw = read_bytes(csv_path, shown)
        text = decode_text(raw, shown)
    except Unreadable as stop:
        problems.append(stop.problem)
        return None
    raws.append((csv_path, shown, raw))
    positions.add_text(shown, text)
    lines = text.split("\n")
    header_line = lines[0] if lines else ""
    delimiter = max(",;\t", key=header_line.count)
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(rows, None)
    if not header or not any(cell.strip() for cell in header):
        problems.append(Problem(shown, 1, 1, "tệp đơn vị trống",
                                "dòng đầu là tên cột: mã, tên đơn vị, khu vực, số đoàn viên, "
                                "chỉ tiêu"))
        return None
    columns: dict[int, str] = {}
    header_starts = _field_starts(header_line, delimiter)
    for index, cell in enumerate(header):
        name = _CSV_COLUMNS.get(_csv_header(cell))
        column_at = header_starts[index] if index < len(header_starts) else 1
        if name is None:
            if cell.strip():
                problems.append(Problem(
                    shown, 1, column_at, f"cột '{cell.strip()}' không dùng đến",
                    "các cột Loa đọc: mã, tên đơn vị, khu vực, số đoàn viên, chỉ tiêu",
                    Severity.WARNING))
            continue
        columns[index] = name
    missing = [label for key, label in (("slug", "mã"), ("name", "tên đơn vị"))
               if key not in columns.values()]
    if missing:
        problems.append(Problem(shown, 1, 1, f"thiếu cột {', '.join(missing)}",
                                "dòng đầu là tên cột: mã, tên đơn vị, khu vực, số đoàn viên, "
                                "chỉ tiêu"))
        return None
    units: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for row in rows:
        line = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        starts = _field_starts(lines[line - 1] if line - 1 < len(lines) else "", delimiter)
        values: dict[str, tuple[str, int]] = {}
        for index, name in columns.items():
            cell = row[index].strip() if index < len(row) else ""
            values[name] = (cell, starts[index] if index < len(starts) else 1)
        slug, slug_col = values["slug"]
        if not re.match(schema.SLUG, slug):
            problems.append(Problem(
                shown, line, slug_col,
                f"mã đơn vị '{slug}' không hợp lệ" if slug else "thiếu mã đơn vị",
                "mã chỉ gồm chữ thường không dấu, số, - và _ "
                f"(VD: {slugify(slug or values['name'][0], '-')})"))
            continue
        if slug in seen:
            problems.append(Problem(shown, line, slug_col,
                                    f"mã đơn vị '{slug}' bị lặp lại (đã có ở dòng {seen[slug]})",
                                    "mỗi đơn vị một mã riêng"))
            continue
        seen[slug] = line
        unit: dict[str, Any] = {}
        path = (*node_path, "children", slug)
        row_span = Span(Pos(shown, line, 1), 0, 0)
        positions.record(path, row_span, row_span, True)
        name, name_col = values["name"]
        if not name:
            problems.append(Problem(shown, line, name_col, f"đơn vị '{slug}' thiếu tên",
                                    "điền cột tên đơn vị"))
            continue
        unit["name"] = unicodedata.normalize("NFC", name)
        positions.record((*path, "name"), Span(Pos(shown, line, name_col), 0, 0), None, False)
        area = values.get("area", ("", 1))[0]
        if area:
            unit["area"] = unicodedata.normalize("NFC", area)
        members_text, members_col = values.get("members", ("", 1))
        members: int | None = None
        if members_text:
            members = _count(members_text)
            if members is None:
                problems.append(Problem(shown, line, members_col,
                                        f"số đoàn viên '{members_text}' không phải số",
                                        "viết số nguyên, VD: 5891 hoặc 5.891"))
            else:
                unit["members"] = members
                positions.record((*path, "members"),
                               Span(Pos(shown, line, members_col), 0, 0), None, False)
        quota_text, quota_col = values.get("quota", ("", 1))
        if quota_text:
            quota_pos = Span(Pos(shown, line, quota_col), 0, 0)
            percent = _PERCENT.match(quota_text)
            number = _count(quota_text)
            if percent:
                value = float(f"{percent.group(1)}.{percent.group(2) or 0}")
                if value > 100:
                    problems.append(Problem(shown, line, quota_col,
                                            f"chỉ tiêu '{quota_text}' vượt quá 100%",
                                            "chỉ tiêu phần trăm tính trên số đoàn viên"))
                    continue
                if members is None:
                    problems.append(Problem(shown, line, quota_col,
                                            f"chỉ tiêu '{quota_text}' cần số đoàn viên",
                                            "điền cột số đoàn viên, hoặc viết chỉ tiêu là một số"))
                    continue
                whole, frac = percent.group(1), percent.group(2)
                unit["quota"] = f"{whole}.{frac}%" if frac else f"{whole}%"
            elif number is not None:
                unit["quota"] = number
                if members is not None and number > members:
                    problems.append(Problem(
                        shown, line, quota_col,
                        f"chỉ tiêu {number} lớn hơn số đoàn viên {members}",
                        "kiểm tra lại hai cột này", Severity.WARNING))
            else:
                problems.append(Problem(shown, line, quota_col,
                                        f"chỉ tiêu '{quota_text}' không hợp lệ",
                                        "viết một số (VD: 2356) hoặc phần trăm số đoàn viên "
                                        "(VD: 40%)"))
                continue
            positions.record((*path, "quota"), quota_pos, None, False)
        units[slug] = unit
    return units


__all__ = ["load_units"]
