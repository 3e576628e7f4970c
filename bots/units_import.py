"""`loa units import FILE --org SLUG`: a district's unit list from CSV or Excel into flows.yaml.

The list an organiser has is usually an Excel sheet with a title above the table. Loa finds the
header row (mã, tên đơn vị, khu vực, số đoàn viên, chỉ tiêu — names matched without diacritics,
the same names `units:` CSV files use), reads each row below it, and writes the units CSV that
the organisation node's `units:` names, in Loa's own form (UTF-8, comma-separated). Nothing is
written unless the whole deployment still passes `loa check` with the new list; every problem
names the row of the file the organiser gave (and the column by its header).

A node without a `units:` line: nothing is written; the line to add and the CSV are printed.
The console's "Đơn vị" page does the same for admins (bots/console/units_pages.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from bots.flows_files import check_with, write_atomically, yaml_files
from flows.problems import Pos, Positions, Problem
from flows.suggest import did_you_mean, slugify
from flows.units_csv import _CSV_COLUMNS, _csv_header, load_units  # the CSV format's own names
from flows.yaml_reader import Unreadable, decode_text

MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 5000
HEADER_SEARCH = 20  # rows above the header (a title, a date) that are skipped
FIELDS = ("slug", "name", "area", "members", "quota")
HEADERS = ("mã", "tên đơn vị", "khu vực", "số đoàn viên", "chỉ tiêu")
_COUNT = re.compile(r"^\d{1,3}(?:[.,\s]\d{3})+$")


class UnitsImportError(Exception):
    """The file cannot be imported; `problems` say why (Vietnamese, with row numbers)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class UnitRow:
    slug: str
    name: str
    area: str
    members: str
    quota: str
    row: int  # in the organiser's file (1-based; 0: kept from the existing list)
    generated_slug: bool = False

    def cells(self) -> list[str]:
        return [self.slug, self.name, self.area, self.members, self.quota]


@dataclass(frozen=True, slots=True)
class Target:
    """Where the units of an organisation node live."""

    node: str
    node_name: str
    yaml_file: Path  # the YAML file declaring the node
    units_ref: str | None  # `units:` as written (relative to yaml_file)
    units_path: Path | None  # resolved

    def suggested_ref(self) -> str:
        return f"data/{self.node}-units.csv"


@dataclass(slots=True)
class ImportOutcome:
    target: Target
    rows: list[UnitRow]
    csv_bytes: bytes
    source: str
    problems: list[str] = field(default_factory=list)  # errors: nothing written
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    written: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def yaml_line(self) -> str:
        return f"units: {self.target.suggested_ref()}"


# -- reading the organiser's file -----------------------------------------------------------------


def _is_xlsx(data: bytes, filename: str) -> bool:
    return data[:4] == b"PK\x03\x04" or filename.lower().endswith((".xlsx", ".xlsm"))


def _xlsx_value(cell: Any) -> str:
    value = cell.value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        number_format = getattr(cell, "number_format", "") or ""
        if "%" in number_format:
            percent = value * 100
            text = f"{percent:.2f}".rstrip("0").rstrip(".")
            return f"{text}%"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.strftime("%d/%m/%Y")
    return str(value)


def _xlsx_rows(data: bytes, source: str) -> list[list[list[str]]]:
    """Every sheet's rows of text cells (a percent formatted cell reads "40%")."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as error:  # zipfile, XML and openpyxl errors alike
        raise UnitsImportError([f"{source}: không mở được tệp Excel ({error}). Lưu lại tệp "
                                "dưới dạng .xlsx hoặc CSV UTF-8 rồi thử lại."]) from None
    sheets: list[list[list[str]]] = []
    try:
        for sheet in book.worksheets:
            rows: list[list[str]] = []
            for n, row in enumerate(sheet.iter_rows(), 1):
                if n > MAX_ROWS + HEADER_SEARCH:
                    raise UnitsImportError([f"{source}: quá nhiều dòng (tối đa {MAX_ROWS})."])
                rows.append([_xlsx_value(cell) for cell in row])
            sheets.append(rows)
    finally:
        book.close()
    return sheets


def _csv_rows(data: bytes, source: str) -> list[list[str]]:
    try:
        text = decode_text(data, source)
    except Unreadable as stop:
        problem = stop.problem
        raise UnitsImportError([f"{source}: {problem.message} ({problem.hint})"]) from None
    lines = text.split("\n")
    sample = "\n".join(lines[:HEADER_SEARCH])
    delimiter = max(",;\t", key=sample.count)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if len(rows) > MAX_ROWS + HEADER_SEARCH:
        raise UnitsImportError([f"{source}: quá nhiều dòng (tối đa {MAX_ROWS})."])
    return rows


def _header(rows: list[list[str]]) -> tuple[int, dict[int, str]] | None:
    """(row index, column → field) of the first row naming at least mã/tên and one more."""
    for index, row in enumerate(rows[:HEADER_SEARCH]):
        columns: dict[int, str] = {}
        for col, cell in enumerate(row):
            name = _CSV_COLUMNS.get(_csv_header(cell or ""))
            if name is not None and name not in columns.values():
                columns[col] = name
        if "name" in columns.values() and len(columns) >= 2:
            return index, columns
    return None


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", " ".join(str(text).split()))


def read_units(data: bytes, filename: str) -> list[UnitRow]:
    """The unit rows of a CSV or XLSX file (`filename` is for messages and the format)."""
    source = Path(filename).name or "tệp"
    if not data:
        raise UnitsImportError([f"{source}: tệp trống."])
    if len(data) > MAX_BYTES:
        raise UnitsImportError([f"{source}: tệp lớn quá (tối đa {MAX_BYTES // 1024 // 1024} MB)."])
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" or filename.lower().endswith(".xls"):
        raise UnitsImportError([f"{source}: tệp Excel 97-2003 (.xls) chưa đọc được. Mở bằng "
                                "Excel, chọn Lưu thành → Sổ làm việc Excel (.xlsx) hoặc "
                                "CSV UTF-8."])
    sheets = _xlsx_rows(data, source) if _is_xlsx(data, filename) else [_csv_rows(data, source)]
    for rows in sheets:
        found = _header(rows)
        if found is None:
            continue
        at, columns = found
        return _rows_below(rows, at, columns, source)
    raise UnitsImportError([
        f"{source}: không tìm thấy dòng tiêu đề trong {HEADER_SEARCH} dòng đầu. Dòng tiêu đề "
        "cần có các cột: mã, tên đơn vị, khu vực, số đoàn viên, chỉ tiêu (ít nhất tên đơn vị "
        "và một cột khác; viết có dấu hay không dấu đều được)."
    ])


def _rows_below(rows: list[list[str]], at: int, columns: dict[int, str],
                source: str) -> list[UnitRow]:
    out: list[UnitRow] = []
    for index in range(at + 1, len(rows)):
        row = rows[index]
        values = {name: _clean(row[col]) if col < len(row) else ""
                  for col, name in columns.items()}
        if not any(values.values()):
            continue
        slug = values.get("slug", "").strip().lower()
        generated = False
        name = values.get("name", "")
        if not slug and name:
            slug = slugify(name, "-")[:64].strip("-")
            generated = True
        out.append(UnitRow(slug, name, values.get("area", ""), _number(values.get("members", "")),
                           _number(values.get("quota", "")), index + 1, generated))
    if not out:
        raise UnitsImportError([f"{source}: không có đơn vị nào dưới dòng tiêu đề "
                                f"(dòng {at + 1})."])
    return out


def _number(text: str) -> str:
    """5.891 → 5891 (Loa's own files keep plain numbers); anything else as it is."""
    return re.sub(r"[.,\s]", "", text) if _COUNT.match(text) else text


def render_csv(rows: Sequence[UnitRow]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADERS)
    for row in rows:
        writer.writerow(row.cells())
    return out.getvalue().encode("utf-8")


# -- where the node's units live ------------------------------------------------------------------


def _nodes(data: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    orgs = data.get("organisations") if isinstance(data, dict) else None
    stack = [orgs] if isinstance(orgs, dict) else []
    seen: set[int] = set()
    while stack:
        level = stack.pop()
        if id(level) in seen:
            continue
        seen.add(id(level))
        for slug, node in level.items():
            if isinstance(node, dict):
                yield str(slug), node
                children = node.get("children")
                if isinstance(children, dict):
                    stack.append(children)


def find_target(config: Path, slug: str) -> Target:
    """The YAML file declaring `slug` and the units CSV it names (`UnitsImportError` if the
    node is not in the deployment)."""
    known: list[str] = []
    found: Target | None = None
    for path in yaml_files(config):
        try:
            data = yaml.safe_load(path.read_text("utf-8-sig"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        for node_slug, node in _nodes(data):
            known.append(node_slug)
            if node_slug != slug:
                continue
            units = node.get("units")
            ref = units.strip() if isinstance(units, str) and units.strip() else None
            name = node.get("name") if isinstance(node.get("name"), str) else slug
            target = Target(slug, str(name), path, ref,
                            (path.parent / ref).resolve() if ref else None)
            if found is None or (found.units_ref is None and ref is not None):
                found = target
    if found is None:
        # Units listed in CSV files are nodes too, but they hold no units of their own.
        hint = did_you_mean(slug, known)
        raise UnitsImportError([f"không có đơn vị '{slug}' trong {config}"
                                + (f"; {hint}" if hint else "")
                                + " (dùng mã đơn vị viết trong organisations)"])
    return found


# -- validating -----------------------------------------------------------------------------------


def _where(row: UnitRow | None, column: str | None, source: str) -> str:
    parts = [source]
    if row is not None and row.row:
        parts.append(f"dòng {row.row}")
    elif row is not None:
        parts.append(f"đơn vị '{row.slug}' (danh sách cũ)")
    if column:
        parts.append(f"cột '{column}'")
    return ", ".join(parts)


def _column_at(line: str, column: int) -> int:
    """The field index of a 1-based character column in one CSV line of ours."""
    index, quoted = 0, False
    for position, char in enumerate(line, 1):
        if position >= column:
            break
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            index += 1
    return index


def check_rows(rows: Sequence[UnitRow], csv_bytes: bytes, source: str,
               node: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the list as Loa's CSV reader sees it, by the organiser's rows."""
    errors: list[str] = []
    warnings: list[str] = []
    seen: dict[str, UnitRow] = {}
    for row in rows:
        if row.slug in seen:
            first = seen[row.slug]
            errors.append(f"{_where(row, 'mã', source)}: mã đơn vị '{row.slug}' bị lặp lại (đã "
                          f"có ở {'dòng ' + str(first.row) if first.row else 'danh sách cũ'}) "
                          "— mỗi đơn vị một mã riêng")
        seen.setdefault(row.slug, row)
    lines = csv_bytes.decode("utf-8").split("\n")
    problems: list[Problem] = []
    with tempfile.TemporaryDirectory(prefix="loa-units-") as tmp:
        path = Path(tmp) / "units.csv"
        path.write_bytes(csv_bytes)
        load_units(path, "units.csv", ("organisations", node), Positions(Pos("units.csv", 1, 1)),
                   problems, [])
    for problem in problems:
        if "bị lặp lại" in problem.message:
            continue  # reported above with the organiser's row numbers
        at: UnitRow | None = rows[problem.line - 2] if 2 <= problem.line < len(rows) + 2 \
            else None
        column = None
        if problem.line >= 2 and problem.line - 1 < len(lines):
            index = _column_at(lines[problem.line - 1], problem.column)
            column = HEADERS[index] if index < len(HEADERS) else None
        text = f"{_where(at, column, source)}: {problem.message}"
        if problem.hint:
            text += f" — {problem.hint}"
        (errors if problem.is_error else warnings).append(text)
    return errors, warnings


# -- the import -----------------------------------------------------------------------------------


def _existing(target: Target) -> list[UnitRow]:
    if target.units_path is None or not target.units_path.is_file():
        return []
    try:
        rows = read_units(target.units_path.read_bytes(), target.units_path.name)
    except UnitsImportError:
        return []
    return [UnitRow(r.slug, r.name, r.area, r.members, r.quota, 0) for r in rows]


def _slugs_elsewhere(config: Path, node: str,
                     own: set[str]) -> tuple[dict[str, str], set[str]]:
    """(slug → name of every organisation of the deployment, the node's children written in
    YAML); the node's own CSV units left out. A slug names one node: reports and the console
    find people's units by it."""
    from flows.loader import load

    parsed = load(config).parsed
    found: dict[str, str] = {}
    inline: set[str] = set()
    stack = list(parsed.organisations.items()) if parsed is not None else []
    while stack:
        slug, org = stack.pop()
        if slug == node:
            inline = set(org.children) - own
        if slug not in own:
            found.setdefault(slug, org.name)
        stack.extend(org.children.items())
    return found, inline


def import_units(
    config: Path, node: str, data: bytes, filename: str, *, merge: bool = False,
    write: bool = True,
) -> ImportOutcome:
    """Read, validate and (if everything passes and `write`) write the node's unit list.
    Raises `UnitsImportError` when the file itself cannot be read or the node is unknown;
    row problems are in the outcome (`ok` False, nothing written)."""
    source = Path(filename).name or "tệp"
    target = find_target(config, node)
    rows = read_units(data, filename)
    old = _existing(target)
    if merge:
        given = {r.slug for r in rows}
        rows = [*(r for r in old if r.slug not in given), *rows]
        order = {r.slug: n for n, r in enumerate(old)}
        rows.sort(key=lambda r: order.get(r.slug, len(order)))
    csv_bytes = render_csv(rows)
    outcome = ImportOutcome(target, list(rows), csv_bytes, source)
    generated = [r for r in rows if r.generated_slug]
    if generated:
        outcome.notes.append(
            "Các dòng không ghi mã được đặt mã theo tên: "
            + ", ".join(f"dòng {r.row} → {r.slug}" for r in generated[:10])
            + (f" (và {len(generated) - 10} dòng nữa)" if len(generated) > 10 else "")
        )
    errors, warnings = check_rows(rows, csv_bytes, source, node)
    own = {r.slug for r in old}
    taken, inline = _slugs_elsewhere(config, node, own)
    moved = [r.slug for r in rows if r.slug in inline]
    if moved and target.units_path is None:
        outcome.notes.append(
            f"Các đơn vị {', '.join(moved[:10])} đang viết trong children của '{node}': khi "
            "thêm dòng units:, xóa chúng khỏi children (mỗi đơn vị khai báo ở một nơi).")
    for row in rows:
        if row.slug in taken and row.slug not in own and row.slug not in inline:
            errors.append(f"{_where(row, 'mã', source)}: mã '{row.slug}' đã là mã của "
                          f"{taken[row.slug]} — mỗi mã chỉ dùng cho một đơn vị trong cả "
                          "flows.yaml; đặt mã khác")
    outcome.problems.extend(errors)
    outcome.warnings.extend(warnings)
    before = {r.slug: r for r in old}
    after = {r.slug: r for r in rows}
    outcome.added = [s for s in after if s not in before]
    outcome.changed = [s for s in after if s in before and after[s].cells() != before[s].cells()]
    outcome.removed = [s for s in before if s not in after]
    if outcome.problems or target.units_path is None:
        return outcome
    trial = check_with(config, {target.units_path: csv_bytes})
    if not trial.ok:
        shown = target.units_path.name
        for problem in trial.errors:
            text = f"{problem.file}:{problem.line}:{problem.column}: {problem.message}"
            if problem.file.endswith(shown) and 2 <= problem.line < len(rows) + 2:
                text = f"{_where(rows[problem.line - 2], None, source)}: {problem.message}"
            if problem.hint:
                text += f" — {problem.hint}"
            outcome.problems.append(text)
        return outcome
    if write:
        write_atomically(target.units_path, csv_bytes)
        outcome.written = True
    return outcome


def summary(outcome: ImportOutcome) -> list[str]:
    """What happened, as lines for the organiser."""
    lines: list[str] = []
    target = outcome.target
    if outcome.problems:
        lines.append(f"Chưa ghi gì: danh sách có {len(outcome.problems)} lỗi.")
        return lines
    if target.units_path is None:
        lines.append(
            f"Danh sách hợp lệ, nhưng đơn vị '{target.node}' chưa có dòng 'units:' trong "
            f"{target.yaml_file.name} nên Loa chưa ghi gì. Thêm dòng dưới đây vào dưới "
            f"'{target.node}:' (thẳng lề với name:) rồi nhập lại: Loa sẽ ghi danh sách vào "
            f"{target.suggested_ref()}. Danh sách (dạng CSV) ở ngay sau dòng đó."
        )
        return lines
    verb = "Đã ghi" if outcome.written else "Hợp lệ (chưa ghi)"
    lines.append(f"{verb} {len(outcome.rows)} đơn vị của {target.node_name} vào "
                 f"{target.units_ref}: thêm {len(outcome.added)}, sửa {len(outcome.changed)}, "
                 f"bỏ {len(outcome.removed)}.")
    if outcome.removed:
        lines.append("Đơn vị bị bỏ khỏi danh sách: " + ", ".join(outcome.removed[:20])
                     + (" …" if len(outcome.removed) > 20 else "")
                     + ". Người đã chọn các đơn vị này vẫn còn trong dữ liệu; báo cáo tính họ "
                     "vào đơn vị cấp trên.")
    return lines


# -- the command ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="VIỆC")
    add = actions.add_parser("import", help="nhập danh sách đơn vị từ tệp CSV hoặc Excel (.xlsx)")
    add.add_argument("file", help="tệp .csv hoặc .xlsx có các cột: mã, tên đơn vị, khu vực, "
                     "số đoàn viên, chỉ tiêu")
    add.add_argument("--org", required=True, help="mã đơn vị nhận danh sách (trong flows.yaml)")
    add.add_argument("--merge", action="store_true",
                     help="giữ các đơn vị cũ không có trong tệp (mặc định: thay cả danh sách)")
    add.add_argument("--dry-run", action="store_true", help="chỉ kiểm tra, không ghi")
    add.add_argument("--reload", action="store_true",
                     help="ghi xong thì áp dụng ngay cho máy chủ đang chạy (như loa reload)")
    # `loa units import FILE --config x` as well as `loa units --config x import FILE`
    add.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    from bots.settings import SettingsError, load

    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as error:
        print(f"Lỗi: không đọc được {path}: {error.strerror}", file=sys.stderr)
        return 2
    if not Path(settings.config).is_file():
        print(f"Lỗi: không tìm thấy tệp kịch bản {settings.config} (đặt LOA_CONFIG hoặc "
              "--config)", file=sys.stderr)
        return 2
    try:
        outcome = import_units(settings.config, args.org, data, path.name, merge=args.merge,
                               write=not args.dry_run)
    except UnitsImportError as error:
        for line in error.problems:
            print(f"Lỗi: {line}", file=sys.stderr)
        return 1
    for line in outcome.problems:
        print(line, file=sys.stderr)
    for line in outcome.warnings:
        print(f"cảnh báo: {line}", file=sys.stderr)
    for line in outcome.notes:
        print(line)
    for line in summary(outcome):
        print(line, file=sys.stderr if outcome.problems else sys.stdout)
    if outcome.problems:
        return 1
    if outcome.target.units_path is None:
        print(f"\n    {outcome.yaml_line}\n")
        sys.stdout.write(outcome.csv_bytes.decode("utf-8"))
        return 0
    if outcome.written and args.reload:
        from bots.reload_cli import main as reload_main

        return reload_main(argparse.Namespace(config=args.config, wait=15.0))
    if outcome.written:
        print("Chạy `uv run loa reload` (hoặc bấm “Áp dụng” trong bảng điều khiển) để máy chủ "
              "đang chạy dùng danh sách mới.")
    return 0


__all__ = [
    "FIELDS",
    "HEADERS",
    "ImportOutcome",
    "Target",
    "UnitRow",
    "UnitsImportError",
    "add_arguments",
    "check_rows",
    "find_target",
    "import_units",
    "main",
    "read_units",
    "render_csv",
    "summary",
]
