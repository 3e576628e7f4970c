"""`loa graph`: a Mermaid state diagram built from the same edges the checker uses."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.graph import main, mermaid
from flows.schema import Flow
from flows.steps import step_ids, successors

ROOT = Path(__file__).resolve().parents[2]

FLOWS = """\
flows:
  dang_ky:
    title: Đăng ký thông tin
    steps:
      - ask: Bạn đồng ý cho Ban Tổ chức lưu thông tin chứ?
        expect: yes_no
        save: dong_y
        when_no: {say: Không sao, goto: menu}
      - ask: Họ và tên của bạn là?
        save: ho_ten
      - ask: "Email: của bạn là gì?"
        expect: email
        save: email
      - say: Cảm ơn {ho_ten}, bạn đã đăng ký "thành công"!
        choices:
          - {title: Thực hiện thôi nào, goto: cong_dan_so}
          - {title: Để sau}
      - end: Hẹn gặp lại
  cong_dan_so:
    steps: [{say: Chào}]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "flows.yaml"
    path.write_text(FLOWS, encoding="utf-8")
    return path


def dang_ky() -> Flow:
    import yaml

    return Flow.model_validate(yaml.safe_load(FLOWS)["flows"]["dang_ky"])


def test_diagram_has_every_step_and_edge() -> None:
    flow = dang_ky()
    text = mermaid("dang_ky", flow)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "  ho_ten --> email: tiếp" in lines
    assert "  dong_y --> flow__menu: không" in lines
    assert "  [*] --> dong_y" in lines
    ids = step_ids(flow)
    say, end = ids[3], ids[4]
    assert f"  {say} --> flow__cong_dan_so: Thực hiện thôi nào" in lines
    assert f"  {say} --> {end}: Để sau" in lines
    assert f"  {end} --> [*]" in lines
    # Every successor of steps.py is drawn, and nothing else.
    drawn = {tuple(m.groups()) for m in re.finditer(r"^  (\w+) --> (\w+):", text, re.M)}
    expected = {
        (src, dst if dst in ids else f"flow__{dst}")
        for src, targets in successors(flow).items()
        for dst in targets
    }
    assert drawn == expected
    # Labels are one line and carry no double quote that would end Mermaid's string.
    (label,) = [line for line in lines if line.endswith(f" as {say}")]
    assert label.count('"') == 2 and "Cảm ơn ho_ten" in label


def test_main_prints_the_diagram(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argparse.Namespace(flow="dang_ky", config=str(config))) == 0
    assert capsys.readouterr().out.startswith("stateDiagram-v2\n")


def test_unknown_flow_suggests_a_close_name(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argparse.Namespace(flow="dangky", config=str(config))) == 1
    err = capsys.readouterr().err
    assert "không có kịch bản nào tên 'dangky'" in err
    assert "có phải ý bạn là 'dang_ky'?" in err


def test_broken_config_is_not_drawn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(FLOWS.replace("goto: cong_dan_so", "goto: cong_dan_sooo"), encoding="utf-8")
    assert main(argparse.Namespace(flow="dang_ky", config=str(path))) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cong_dan_sooo" in captured.err and "loa check" in captured.err


def test_cli_reads_loa_config(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bots.cli", "graph", "dang_ky"],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "LOA_CONFIG": str(config)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stateDiagram-v2")
    assert "ho_ten --> email" in result.stdout
