"""`loa check`: every broken file points at the right file:line:column with a useful message;
valid configurations pass; the command is fast, light and writes nothing."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from flows.check import check, load_checked, main
from flows.loader import Problem, Severity

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).resolve().parent / "broken"
EXPECT = re.compile(
    r"^# expect(?P<warning>-warning)?: (?:(?P<file>[^\s:]+):)?(?P<line>\d+):(?P<column>\d+) "
    r"(?P<message>[^|]+?)(?: \| (?P<hint>.+))?$"
)


@dataclass(frozen=True)
class Expectation:
    file: Path
    line: int
    column: int
    message: str
    hint: str | None
    severity: Severity


def expectations(path: Path) -> list[Expectation]:
    """The `# expect: [file:]line:column message [| hint]` lines at the top of a fixture."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = EXPECT.match(line)
        if match is None:
            break
        found.append(
            Expectation(
                BROKEN / match["file"] if match["file"] else path,
                int(match["line"]),
                int(match["column"]),
                match["message"].strip(),
                match["hint"],
                Severity.WARNING if match["warning"] else Severity.ERROR,
            )
        )
    return found


def matches(problem: Problem, want: Expectation) -> bool:
    return (
        Path(problem.file).resolve() == want.file.resolve()
        and (problem.line, problem.column) == (want.line, want.column)
        and want.message in problem.message
        and (want.hint is None or want.hint in problem.hint)
        and problem.severity is want.severity
    )


BROKEN_FILES = sorted(BROKEN.glob("*.yaml"))


def test_every_broken_fixture_says_what_it_expects() -> None:
    assert len(BROKEN_FILES) >= 20
    for path in BROKEN_FILES:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", BROKEN_FILES, ids=[p.stem for p in BROKEN_FILES])
def test_broken_file_is_reported_where_the_mistake_is(path: Path) -> None:
    wanted = expectations(path)
    problems = check(path)
    for want in wanted:
        assert any(matches(p, want) for p in problems), (
            f"expected {want.file.name}:{want.line}:{want.column} '{want.message}', got:\n"
            + "\n".join(f"{p} | {p.hint}" for p in problems)
        )
    # Exactly the expected errors: one mistake, one error (no cascade of follow-up errors).
    errors = [p for p in problems if p.is_error]
    expected_errors = [w for w in wanted if w.severity is Severity.ERROR]
    assert len(errors) == len(expected_errors), "\n".join(map(str, errors))
    for problem in problems:
        assert problem.hint, f"no hint for {problem}"


def test_python_tag_is_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = (BROKEN / "python_tag.yaml").read_text(encoding="utf-8")
    target = tmp_path / "flows.yaml"
    target.write_text(source, encoding="utf-8")
    marker = tmp_path / "loa-pwned-marker"
    result = subprocess.run(
        [sys.executable, "-m", "bots.cli", "check", str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert "!!python/object/apply:os.system" in result.stdout
    assert not marker.exists()
    # The fixture is live: a loader that constructs Python objects would have run it.
    monkeypatch.chdir(tmp_path)
    yaml.unsafe_load(source)
    assert marker.exists()


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01")
    (problem,) = check(path)
    assert (problem.line, problem.column) == (1, 1)
    assert "nhị phân" in problem.message


def test_file_not_in_utf8_points_at_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_bytes("flows:\n  a:\n    steps:\n      - say: Xin chào\n".encode("cp1258"))
    (problem,) = check(path)
    assert "UTF-8" in problem.message
    assert (problem.line, problem.column) == (4, 20)  # "Xin ch" then the first cp1258 byte


def test_oversized_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_bytes(b"flows: {}\n" + b"#" * (5 * 1024 * 1024))
    (problem,) = check(path)
    assert "quá lớn" in problem.message


def test_missing_file(tmp_path: Path) -> None:
    (problem,) = check(tmp_path / "khong-co.yaml")
    assert "không tìm thấy tệp" in problem.message


# --------------------------------------------------------------------------- inline cases

CASES: dict[str, tuple[str, tuple[int, int, str, Severity]]] = {
    "duplicate save key": (
        """\
flows:
  dang_ky:
    steps:
      - {id: a, ask: Tên, save: ho_ten}
      - {id: b, ask: Tên lại, save: ho_ten}
""",
        (5, 37, "trường 'ho_ten' đã được lưu", Severity.ERROR),
    ),
    "link to unknown flow": (
        """\
organisations:
  tan-phu:
    name: Tân Phú
    links: {huyhieuso: cong_dan_sô}
flows:
  cong_dan_so:
    steps: [{say: Chào}]
""",
        (4, 24, "không có kịch bản nào tên 'cong_dan_sô'", Severity.ERROR),
    ),
    "menu names unknown flow": (
        """\
menu: menuu
flows:
  menu:
    steps: [{say: Chào}]
""",
        (1, 7, "không có kịch bản nào tên 'menuu'", Severity.ERROR),
    ),
    "branch on a field nobody saves": (
        """\
flows:
  a:
    steps:
      - ask: Điện thoại của bạn?
        expect: {choice: [Android, iPhone]}
        save: he_dieu_hanh
      - branch:
          - {if: {field: he_dieu_hanhh, equals: Android}, goto: android}
      - {id: android, end: Mở CH Play}
""",
        (8, 26, "không có bước nào lưu trường 'he_dieu_hanhh'", Severity.ERROR),
    ),
    "action goto unknown flow": (
        """\
flows:
  a:
    steps:
      - {action: goto, flow: huong_dan}
""",
        (4, 30, "không có kịch bản nào tên 'huong_dan'", Severity.ERROR),
    ),
    "submit without campaign": (
        """\
flows:
  a:
    steps:
      - action: submit
        say: Cảm ơn
""",
        (4, 17, "action: submit cần kịch bản có 'campaign'", Severity.ERROR),
    ),
    "flow nobody opens": (
        """\
flows:
  menu:
    steps: [{say: Chào}]
  lac_loai:
    steps: [{say: Không ai tới đây}]
""",
        (4, 3, "kịch bản 'lac_loai' không được mở", Severity.WARNING),
    ),
    "personal data without consent": (
        """\
flows:
  a:
    steps:
      - ask: Số điện thoại của bạn là
        expect: phone
        save: so_dien_thoai
""",
        (6, 15, "chưa hỏi người dùng đồng ý", Severity.WARNING),
    ),
    "choices that read the same without diacritics": (
        """\
flows:
  a:
    steps:
      - choose: Bạn chọn gì?
        choices:
          - {title: Có, goto: a2}
          - {title: Co, goto: a2}
      - {id: a2, end: Xong}
""",
        (7, 21, "trùng với một lựa chọn khác ở dòng 6", Severity.ERROR),
    ),
    "placeholder that is not a field name": (
        """\
flows:
  a:
    steps:
      - say: "Chào {Họ tên}!"
""",
        (4, 20, "'{Họ tên}' không phải tên trường hợp lệ", Severity.ERROR),
    ),
    "flow id with diacritics": (
        """\
flows:
  đăng ký:
    steps: [{say: Chào}]
""",
        (2, 3, "tên kịch bản 'đăng ký'", Severity.ERROR),
    ),
    "unordered waves": (
        """\
campaigns:
  c:
    title: C
    waves:
      - {name: Đợt 2, from: 2023-09-15, to: 2023-10-15}
      - {name: Đợt 1, from: 2023-08-07, to: 2023-09-14}
flows:
  a:
    steps: [{say: Chào}]
""",
        (6, 29, "đợt 'Đợt 1' bắt đầu trước đợt 'Đợt 2'", Severity.ERROR),
    ),
    "unknown channel": (
        """\
organisations:
  tan-phu:
    name: Tân Phú
    channels:
      telegramm: {token: $TG}
flows:
  a:
    steps: [{say: Chào}]
""",
        (5, 7, "kênh 'telegramm' không được hỗ trợ", Severity.ERROR),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cross_reference_case(name: str, tmp_path: Path) -> None:
    source, (line, column, phrase, severity) = CASES[name]
    path = tmp_path / "flows.yaml"
    path.write_text(source, encoding="utf-8")
    problems = check(path)
    assert any(
        (p.line, p.column) == (line, column) and phrase in p.message and p.severity is severity
        for p in problems
    ), "\n".join(f"{p} | {p.hint}" for p in problems)
    assert sum(p.is_error for p in problems) == (severity is Severity.ERROR)


# --------------------------------------------------------------------------- valid bundles

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

MAIN = """\
include: [quan/tan-phu.yaml]
menu: menu
organisations:
  tp-hcm:
    name: Thành Đoàn TP. Hồ Chí Minh
campaigns:
  cong_dan_so:
    title: Thử thách "Công dân số" năm 2023
    waves:
      - {name: Đợt 1, from: 2023-08-07, to: 2023-09-14}
      - {name: Đợt 2, from: 2023-09-15, to: 2023-10-15}
flows:
  menu:
    steps:
      - choose: Chào bạn! Bạn muốn làm gì?
        choices:
          - {title: Đăng ký, goto: dang_ky, synonyms: [dang ky]}
          - {title: Công dân số, goto: cong_dan_so}
  dang_ky:
    title: Đăng ký thông tin
    steps:
      - ask: Ban Tổ chức cần lưu thông tin của bạn để xét huy hiệu. Bạn đồng ý chứ?
        expect: yes_no
        save: dong_y
        when_no: {say: 'Không sao, khi nào sẵn sàng bạn gõ "menu" nhé.', goto: menu}
      - ask: Họ và tên của bạn là?
        expect: {text: {min: 4}}
        save: ho_ten
      - ask: "Đơn vị học tập và công tác của bạn? (VD: Đoàn phường Hòa Thạnh)"
        expect: unit
        save: don_vi
      - ask: Địa chỉ mail của bạn là gì?
        expect: email
        retry: "Email chưa đúng, bạn nhập lại giúp mình nhé (VD: ten@gmail.com)."
        save: email
      - say: Cảm ơn {ho_ten}, bạn đã đăng ký thành công {ten_chien_dich}!
        choices:
          - {title: Thực hiện thôi nào, goto: cong_dan_so}
"""

DISTRICT = """\
organisations:
  tp-hcm:
    children:
      tan-phu:
        name: Quận Đoàn Tân Phú
        units: ../data/tan-phu.csv
        channels:
          telegram: {token: $TANPHU_TELEGRAM_TOKEN, mode: polling}
        links: {huyhieuso: cong_dan_so}
flows:
  cong_dan_so:
    campaign: cong_dan_so
    requires: dang_ky
    steps:
      - evidence: vneid
        ask: Đăng nhập VNeID > Thông tin cá nhân, chụp màn hình như ảnh mẫu rồi gửi nhé.
        image: media/mau-vneid.png
        expect: image
      - evidence: dich_vu_cong
        ask: Bạn đã sử dụng dịch vụ công trực tuyến nào? Thuộc lĩnh vực gì?
        expect: {text: {min: 10}}
      - action: submit
        say: Cảm ơn bạn! Ban Tổ chức sẽ xét duyệt minh chứng {vneid} cho bạn.
"""

UNITS = (
    "Mã;Tên đơn vị;Khu vực;Số đoàn viên;Chỉ tiêu\n"
    "p-hoa-thanh;Đoàn phường Hòa Thạnh;Khu vực 1;1.200;40%\n"
    "thpt-tan-phu;Đoàn trường THPT Tân Phú;Khu vực 2;5891;2356\n"
)


def write_valid_bundle(folder: Path) -> Path:
    (folder / "quan" / "media").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "flows.yaml").write_text(MAIN, encoding="utf-8")
    (folder / "quan" / "tan-phu.yaml").write_text(DISTRICT, encoding="utf-8")
    (folder / "quan" / "media" / "mau-vneid.png").write_bytes(PNG)
    (folder / "data" / "tan-phu.csv").write_text(UNITS, encoding="utf-8-sig")
    return folder / "flows.yaml"


def test_valid_bundle_passes(tmp_path: Path) -> None:
    path = write_valid_bundle(tmp_path)
    loaded = load_checked(path)
    assert loaded.problems == ()
    assert loaded.bundle is not None
    tan_phu = loaded.bundle.organisations["tp-hcm"].children["tan-phu"]
    assert set(tan_phu.children) == {"p-hoa-thanh", "thpt-tan-phu"}
    step = loaded.bundle.flows["cong_dan_so"].steps[0]
    assert step.image == "quan/media/mau-vneid.png"  # rebased onto the main file's folder
    assert loaded.positions.at(("flows", "cong_dan_so", "steps", 0, "image")).file == str(
        tmp_path / "quan" / "tan-phu.yaml"
    )


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_cli_passes_a_valid_bundle_and_fails_a_broken_one(tmp_path: Path) -> None:
    good = write_valid_bundle(tmp_path)
    result = run_cli("check", str(good))
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == f"{good}: không có lỗi (3 kịch bản, 9 bước)"

    broken = BROKEN / "wrong_type.yaml"
    result = run_cli("check", str(broken))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{broken}:7:22: 'max_retries' cần một số nguyên nhưng là 'nhiều'"
    assert lines[1] == "  gợi ý: chỉ viết chữ số, VD: 3"
    assert lines[-1] == f"{broken}: 1 lỗi"

    # Several files: each is summarised, and one broken file fails the command.
    result = run_cli("check", str(good), str(broken))
    assert result.returncode == 1
    assert f"{good}: không có lỗi" in result.stdout
    assert f"{broken}: 1 lỗi" in result.stdout


def test_cli_reads_loa_config_and_warnings_do_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "kich-ban.yaml"
    path.write_text(
        "flows:\n  menu:\n    steps: [{say: Chào}]\n  lac:\n    steps: [{say: A}]\n",
        encoding="utf-8",
    )
    result = run_cli("check", cwd=tmp_path, env={"LOA_CONFIG": str(path)})
    assert result.returncode == 0
    assert "cảnh báo: kịch bản 'lac' không được mở" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"{path}: không có lỗi, 1 cảnh báo (2 kịch bản, 2 bước)"
    )


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argparse.Namespace(files=[str(BROKEN / "duplicate_ids.yaml")])) == 1
    assert "mã bước 'hoi_ten' trùng" in capsys.readouterr().out


def test_check_imports_nothing_heavy(tmp_path: Path) -> None:
    path = write_valid_bundle(tmp_path)
    code = (
        "import sys\n"
        "from bots.cli import main\n"
        f"code = main(['check', {str(path)!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'transitions', 'aiohttp', 'sqlalchemy', 'redis', 'PIL', 'orjson'})\n"
        "print('HEAVY', heavy, code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "HEAVY [] 0", result.stdout + result.stderr


def test_check_passes_a_thirty_step_flow(tmp_path: Path) -> None:
    # Speed is measured in bench/, never asserted in tests; this checks correctness only.
    steps = "\n".join(
        f"      - ask: Câu hỏi số {n} của bạn là gì, {{ho_ten}}?\n"
        f"        expect: {{text: {{min: 2}}}}\n"
        f"        save: cau_{n}"
        for n in range(29)
    )
    path = tmp_path / "flows.yaml"
    path.write_text(
        "flows:\n  dai:\n    steps:\n      - {ask: Tên bạn, save: ho_ten}\n" + steps + "\n",
        encoding="utf-8",
    )
    problems = check(path)
    assert [p for p in problems if p.is_error] == []


def test_check_writes_nothing(tmp_path: Path) -> None:
    path = write_valid_bundle(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert run_cli("check", str(path), cwd=tmp_path).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_the_shipped_flows_yaml_passes() -> None:
    problems = check(ROOT / "flows.yaml")
    assert [str(p) for p in problems if p.is_error] == []
