"""The loader: positions for every node, safe YAML, includes, unit CSV files, content hashes."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from flows.loader import Loaded, Pos, Problem, Severity, load


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def only_errors(loaded: Loaded) -> list[str]:
    return [f"{p} | {p.hint}" for p in loaded.problems if p.is_error]


FLOW = """\
flows:
  dang_ky:
    title: Đăng ký
    steps:
      - ask: Họ và tên của bạn là?
        save: ho_ten
      - ask: "Email của bạn? (VD: ten@gmail.com)"
        expect: email
        save: email
      - say: Cảm ơn {ho_ten}!
        choices:
          - {title: Về menu, goto: dang_ky}
"""


def test_positions_of_keys_values_and_list_items(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.yaml", FLOW)
    loaded = load(path)
    assert only_errors(loaded) == []
    pos = loaded.positions
    shown = str(path)
    # A scalar entry points at its value; an entry holding a list or mapping at its key.
    assert pos.at(("flows", "dang_ky", "title")) == Pos(shown, 3, 12)
    assert pos.at(("flows", "dang_ky", "steps")) == Pos(shown, 4, 5)
    assert pos.at(("flows", "dang_ky", "steps", 1)) == Pos(shown, 7, 9)
    assert pos.at(("flows", "dang_ky", "steps", 1, "expect")) == Pos(shown, 8, 17)
    assert pos.key(("flows", "dang_ky", "steps", 1, "expect")) == Pos(shown, 8, 9)
    assert pos.at(("flows", "dang_ky", "steps", 2, "choices", 0, "goto")) == Pos(shown, 12, 36)
    assert pos[("flows", "dang_ky", "steps", 0, "save")] == Pos(shown, 6, 15)
    # Unknown paths fall back to the nearest known ancestor.
    assert pos.at(("flows", "dang_ky", "steps", 0, "retry")) == Pos(shown, 5, 9)
    # A needle inside a scalar (a placeholder) is found where it is written.
    assert pos.find(("flows", "dang_ky", "steps", 2, "say"), "{ho_ten}") == Pos(shown, 10, 21)


def test_yaml_12_scalars_and_nfc(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "Họ và tên")
    path = write(
        tmp_path,
        "flows.yaml",
        f"""\
flows:
  a:
    steps:
      - ask: {decomposed}
        expect: {{choice: [yes, no, on, off]}}
        save: ho_ten
      - branch:
          - {{if: {{field: ho_ten, equals: 0912345678}}, goto: a2}}
          - {{if: {{field: ho_ten, in: ["8:30", 012, 1_000]}}, goto: a2}}
          - {{if: {{field: ho_ten, exists: true}}, goto: a2}}
      - {{id: a2, end: Xong}}
""",
    )
    loaded = load(path)
    assert only_errors(loaded) == []
    assert loaded.bundle is not None
    steps = loaded.bundle.flows["a"].steps
    assert steps[0].ask == unicodedata.normalize("NFC", "Họ và tên")  # type: ignore[union-attr]
    assert steps[0].expect.options == ("yes", "no", "on", "off")  # type: ignore[union-attr]
    cases = steps[1].branch  # type: ignore[union-attr]
    assert cases[0].if_.equals == "0912345678"  # a phone number keeps its leading zero
    assert cases[1].if_.in_ == ("8:30", "012", 1000)
    assert cases[2].if_.exists is True


@pytest.mark.parametrize(
    ("source", "line", "column", "phrase"),
    [
        ("flows: !custom {}\n", 1, 8, "thẻ YAML '!custom'"),
        ("flows:\n  a: *nothing\n", 2, 6, "bí danh"),
        ("flows: {}\n---\nflows: {}\n", 2, 1, "một tài liệu YAML"),
        ("flows:\n  ? [a, b]\n  : 1\n", 2, 5, "khóa phải là"),
        (
            "campaigns:\n  c: {title: C, waves: [{name: x, from: 2023-02-30, to: 2023-03-01}]}\n",
            2,
            41,
            "ngày '2023-02-30' không tồn tại",
        ),
        ("flows: " + "[" * 200 + "]" * 200 + "\n", 1, 72, "lồng nhau quá sâu"),
        ('flows:\n  a:\n    steps:\n      - say: "C:\\dữ liệu"\n', 4, 17, "ký tự '\\'"),
    ],
)
def test_unsafe_or_broken_yaml_is_refused(
    tmp_path: Path, source: str, line: int, column: int, phrase: str
) -> None:
    loaded = load(write(tmp_path, "flows.yaml", source))
    assert loaded.bundle is None
    assert any(
        (p.line, p.column) == (line, column) and phrase in p.message for p in loaded.problems
    ), only_errors(loaded)


def test_explicit_standard_tag_is_allowed(tmp_path: Path) -> None:
    loaded = load(
        write(tmp_path, "flows.yaml", "flows:\n  a:\n    steps:\n      - say: !!str 123\n")
    )
    assert only_errors(loaded) == []
    assert loaded.bundle is not None
    assert loaded.bundle.flows["a"].steps[0].say == "123"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("step", "column", "phrase", "hint"),
    [
        ("{ask: Tên, save: Họ tên}", 26, "'Họ tên' không dùng được làm tên", "VD: ho_ten"),
        (
            "{ask: Tên, expect: {text: {min: 4, maks: 9}}}",
            44,
            "khóa không hợp lệ 'maks'",
            "min, max",
        ),
        ("{ask: Tên, expect: {number: {min: 9, max: 1}}}", 20, "min lớn hơn max", "đổi chỗ"),
        (
            "{ask: Ngày sinh, expect: {date: {min: 07/08/2023}}}",
            47,
            "'min' cần một ngày",
            "2023-08-07",
        ),
        ("{choose: Chọn, choices: []}", 24, "cần ít nhất một lựa chọn", "thêm"),
        ("{action: tag}", 18, "action: tag cần khóa 'tag'", "tag: <nhãn>"),
        ("{action: gui}", 18, "'gui' không hợp lệ cho 'action'", "submit, notify"),
        (
            "{say: Chào, hinh: a.png}",
            21,
            "khóa không hợp lệ 'hinh' — có phải ý bạn là 'image'?",
            "say, choices",
        ),
        (
            "{ask: Tên, retry: {a: 1}}",
            20,
            "'retry' cần văn bản nhưng là một nhóm khóa",
            "ngoặc kép",
        ),
        (
            "{ask: Tên, expect: {text: 4}}",
            29,
            "tham số của kiểu 'text' viết chưa đúng",
            "{text: {min: 1, max: 10}}",
        ),
        ("{say: Chọn, choices: [{title: ''}]}", 39, "'title' đang để trống", "viết nội dung"),
        (
            "{say: Chọn, choices: [Có]}",
            31,
            "mục 1 của 'choices' cần các khóa con",
            "khóa: giá trị",
        ),
    ],
)
def test_schema_errors_in_vietnamese_at_the_right_place(
    tmp_path: Path, step: str, column: int, phrase: str, hint: str
) -> None:
    loaded = load(write(tmp_path, "flows.yaml", f"flows:\n  a:\n    steps:\n      - {step}\n"))
    problems = [p for p in loaded.problems if p.is_error]
    assert len(problems) == 1, problems
    (problem,) = problems
    assert (problem.line, problem.column) == (4, column), problem
    assert phrase in problem.message
    assert hint in problem.hint


def test_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, "flows.yaml", "campaigns:\n  c:\n    waves: []\n"))
    (problem,) = loaded.problems
    assert (problem.line, problem.column) == (2, 3)
    assert problem.message == "thiếu khóa 'title' trong 'c'"


def test_quota_union_gives_one_problem(tmp_path: Path) -> None:
    loaded = load(
        write(tmp_path, "flows.yaml", "organisations:\n  x:\n    name: X\n    quota: 40 pt\n")
    )
    (problem,) = loaded.problems
    assert (problem.line, problem.column) == (4, 12)
    assert "cần một số hoặc phần trăm" in problem.message


def test_problem_prints_as_file_line_column() -> None:
    error = Problem("flows.yaml", 3, 5, "thiếu khóa 'steps'", "thêm steps")
    warning = Problem("flows.yaml", 3, 5, "kịch bản không được mở", "", Severity.WARNING)
    assert str(error) == "flows.yaml:3:5: thiếu khóa 'steps'"
    assert str(warning) == "flows.yaml:3:5: cảnh báo: kịch bản không được mở"


# --------------------------------------------------------------------------- includes


def test_includes_merge_sections_and_keep_their_file_names(tmp_path: Path) -> None:
    main = write(
        tmp_path,
        "flows.yaml",
        """\
include: [quan/*.yaml, chung.yaml]
organisations:
  tp-hcm:
    name: Thành Đoàn
flows:
  menu:
    steps: [{say: Chào}]
""",
    )
    write(
        tmp_path,
        "quan/tan-phu.yaml",
        """\
include: [../chung.yaml]
organisations:
  tp-hcm:
    children:
      tan-phu: {name: Quận Đoàn Tân Phú}
flows:
  huong_dan:
    steps:
      - say: Ảnh mẫu
        image: media/mau.png
""",
    )
    write(
        tmp_path,
        "quan/binh-tan.yaml",
        """\
organisations:
  tp-hcm:
    children:
      binh-tan: {name: Quận Đoàn Bình Tân}
""",
    )
    write(tmp_path, "chung.yaml", "flows:\n  hoi_dap:\n    steps: [{say: Hỏi đáp}]\n")
    loaded = load(main)
    assert only_errors(loaded) == []
    assert loaded.bundle is not None
    assert set(loaded.bundle.flows) == {"menu", "huong_dan", "hoi_dap"}
    assert set(loaded.bundle.organisations["tp-hcm"].children) == {"tan-phu", "binh-tan"}
    # chung.yaml is included twice (by the main file and by tan-phu.yaml) but read once.
    assert sorted(p.name for p in loaded.files) == [
        "binh-tan.yaml",
        "chung.yaml",
        "flows.yaml",
        "tan-phu.yaml",
    ]
    # Image paths of included files become relative to the main file's folder.
    assert loaded.bundle.flows["huong_dan"].steps[0].image == "quan/media/mau.png"
    assert loaded.positions.at(("flows", "huong_dan", "steps", 0, "image")) == Pos(
        str(tmp_path / "quan" / "tan-phu.yaml"), 10, 16
    )
    assert loaded.positions.at(("organisations", "tp-hcm", "children", "binh-tan")).file == str(
        tmp_path / "quan" / "binh-tan.yaml"
    )


def test_key_defined_in_two_files_points_at_both(tmp_path: Path) -> None:
    main = write(
        tmp_path,
        "flows.yaml",
        """\
include: [tan-phu.yaml]
organisations:
  tan-phu:
    name: Quận Đoàn Tân Phú
flows:
  menu:
    steps: [{say: Chào}]
""",
    )
    write(
        tmp_path,
        "tan-phu.yaml",
        """\
organisations:
  tan-phu:
    name: Tân Phú (trùng)
menu: menu
""",
    )
    problems = load(main).problems
    messages = {(Path(p.file).name, p.line, p.column, p.message) for p in problems}
    assert (
        "tan-phu.yaml",
        3,
        5,
        f"khóa 'name' đã được khai báo ở {tmp_path / 'flows.yaml'}:4:5",
    ) in messages
    assert ("tan-phu.yaml", 4, 1, "khóa 'menu' không dùng được trong tệp được include") in messages


def test_include_cycle_terminates(tmp_path: Path) -> None:
    main = write(tmp_path, "flows.yaml", "include: [b.yaml]\nflows:\n  a:\n    steps: [{say: A}]\n")
    write(tmp_path, "b.yaml", "include: [flows.yaml]\nflows:\n  b:\n    steps: [{say: B}]\n")
    loaded = load(main)
    assert only_errors(loaded) == []
    assert loaded.bundle is not None and set(loaded.bundle.flows) == {"a", "b"}


def test_broken_included_file_reports_its_own_name(tmp_path: Path) -> None:
    main = write(tmp_path, "flows.yaml", "include: [con/b.yaml]\nflows: {}\n")
    write(tmp_path, "con/b.yaml", "flows:\n  b:\n    steps:\n      - say: x\n     - say: y\n")
    (problem,) = load(main).problems
    assert (Path(problem.file), problem.line, problem.column) == (tmp_path / "con" / "b.yaml", 5, 6)


# --------------------------------------------------------------------------- unit CSV

ORG = """\
organisations:
  tan-phu:
    name: Quận Đoàn Tân Phú
    units: data/units.csv
"""


def test_units_csv_becomes_child_nodes(tmp_path: Path) -> None:
    main = write(tmp_path, "flows.yaml", ORG)
    # Excel style: BOM, semicolons, headers typed without diacritics, Vietnamese thousands.
    write(
        tmp_path,
        "data/units.csv",
        "Ma;Ten don vi;Khu vuc;So doan vien;Chi tieu\n"
        "p-hoa-thanh;Đoàn phường Hòa Thạnh;Khu vực 1;5.891;2.356\n"
        "\n"
        "thpt-tan-phu;Đoàn trường THPT Tân Phú;Khu vực 2;1200;40,5 %\n",
        encoding="utf-8-sig",
    )
    loaded = load(main)
    assert only_errors(loaded) == []
    assert loaded.bundle is not None
    units = loaded.bundle.organisations["tan-phu"].children
    assert units["p-hoa-thanh"].members == 5891
    assert units["p-hoa-thanh"].quota == 2356
    assert units["p-hoa-thanh"].area == "Khu vực 1"
    assert units["thpt-tan-phu"].quota == "40.5%"
    assert loaded.positions.at(
        ("organisations", "tan-phu", "children", "thpt-tan-phu", "quota")
    ) == Pos(str(tmp_path / "data" / "units.csv"), 4, 54)
    assert tmp_path / "data" / "units.csv" in loaded.files


@pytest.mark.parametrize(
    ("rows", "line", "column", "phrase"),
    [
        (
            "mã,tên đơn vị,số đoàn viên,chỉ tiêu\na,A,100,40 phần trăm\n",
            2,
            9,
            "chỉ tiêu '40 phần trăm' không hợp lệ",
        ),
        ("mã,tên đơn vị,số đoàn viên,chỉ tiêu\na,A,100,140%\n", 2, 9, "vượt quá 100%"),
        ("mã,tên đơn vị,chỉ tiêu\na,A,40%\n", 2, 5, "cần số đoàn viên"),
        ("mã,tên đơn vị,số đoàn viên\na,A,nhiều\n", 2, 5, "số đoàn viên 'nhiều' không phải số"),
        ("mã,tên đơn vị\na,A\nb,B\na,C\n", 4, 1, "mã đơn vị 'a' bị lặp lại (đã có ở dòng 2)"),
        ("mã,tên đơn vị\nPhường 1,A\n", 2, 1, "mã đơn vị 'Phường 1' không hợp lệ"),
        ("mã,khu vực\na,A\n", 1, 1, "thiếu cột tên đơn vị"),
        ('mã,tên đơn vị,chỉ tiêu\n"a",A,"2,5"\n', 2, 7, "chỉ tiêu '2,5' không hợp lệ"),
    ],
)
def test_units_csv_errors_point_at_the_cell(
    tmp_path: Path, rows: str, line: int, column: int, phrase: str
) -> None:
    main = write(tmp_path, "flows.yaml", ORG)
    write(tmp_path, "data/units.csv", rows)
    loaded = load(main)
    assert loaded.bundle is None
    assert any(
        Path(p.file) == tmp_path / "data" / "units.csv"
        and (p.line, p.column) == (line, column)
        and phrase in p.message
        for p in loaded.problems
    ), [str(p) for p in loaded.problems]


def test_units_csv_in_a_legacy_encoding_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path, "flows.yaml", ORG)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "units.csv").write_bytes(b"ma,ten don vi\na,Ph\xf2\xf5ng\n")
    (problem,) = load(main).problems
    assert "UTF-8" in problem.message and Path(problem.file).name == "units.csv"


# --------------------------------------------------------------------------- hashing


def test_content_hash_follows_content_not_location(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        write(folder, "flows.yaml", ORG)
        write(folder, "data/units.csv", "mã,tên đơn vị\na,A\n")
    first, second = load(one / "flows.yaml"), load(two / "flows.yaml")
    assert first.content_hash == second.content_hash
    assert len(first.content_hash) == 64
    write(two, "data/units.csv", "mã,tên đơn vị\na,B\n")
    assert load(two / "flows.yaml").content_hash != first.content_hash
