"""`loa report` as an organiser runs it: a separate process, settings from the environment,
on a seeded SQLite database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openpyxl import load_workbook

from bots.records import open_database
from bots.records.db import default_url
from bots.reports.exports import display_width
from bots.reports.organisations import sync_organisations
from flows.compiler import CompiledBundle
from tests.reports.conftest import DEPLOYMENT
from tests.reports.seed import seed_cadres, seed_progress

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def deployment(tmp_path: Path, compiled: CompiledBundle) -> AsyncIterator[Path]:
    (tmp_path / "flows.yaml").write_text(DEPLOYMENT, encoding="utf-8")
    data = tmp_path / "var"
    db = await open_database(default_url(data))
    try:
        await sync_organisations(db, compiled)
        await seed_progress(db)
        await seed_cadres(db)
    finally:
        await db.close()
    yield tmp_path


def loa(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(folder / "var"), LOA_CONFIG=str(folder / "flows.yaml"),
               PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", "report", *args],
        cwd=folder, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )


async def test_the_terminal_table(deployment: Path) -> None:
    done = loa(deployment, "--campaign", "thu_thach", "--org", "quan-a")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Tiến độ theo đơn vị"
    assert lines[1].startswith("Thử thách mẫu · Quận Đoàn A · lập ngày ")
    header = lines[3]
    assert header.startswith("Đơn vị") and "Đã duyệt" in header and "Mã" not in header.split()
    rows = {line.strip().split("  ")[0]: line for line in lines[5:]}
    assert set(rows) == {"Quận Đoàn A", "Đoàn phường 1", "Đoàn phường 2", "Đoàn phường 3",
                         "Đoàn trường 1"}
    # every line as wide as the rule under the header: aligned, diacritics and all
    width = display_width(lines[4])
    assert all(display_width(line) <= width for line in lines[3:])
    end = display_width(header[: header.index("Đã duyệt") + len("Đã duyệt")])
    p3 = rows["Đoàn phường 3"]
    cut = next(i for i in range(len(p3) + 1) if display_width(p3[:i]) == end)
    assert p3[:cut].split()[-3:] == ["5", "3", "1"]  # registered, submitted, approved
    assert "20.0%" in p3


async def test_csv_and_xlsx_files(deployment: Path) -> None:
    done = loa(deployment, "--campaign", "thu_thach", "--wave", "dot 1", "--format", "csv",
               "--out", "dot1.csv")
    assert done.returncode == 0, done.stderr
    raw = (deployment / "dot1.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert text.splitlines()[0].startswith("Mã,Đơn vị,Khu vực,Số đoàn viên,Chỉ tiêu")
    t1 = next(line for line in text.splitlines() if line.startswith("t1,"))
    assert t1.split(",")[6:9] == ["2", "1", "1"]  # Đợt 1 only: T2 came in Đợt 2

    done = loa(deployment, "--campaign", "thu_thach", "--kind", "final", "--format", "xlsx",
               "--out", "tong-ket.xlsx")
    assert done.returncode == 0, done.stderr
    book = load_workbook(deployment / "tong-ket.xlsx")
    # no cadre reported anything in this campaign: no cadre sheets
    assert book.sheetnames == ["Tổng hợp", "Đợt 1", "Đợt 2", "Danh sách"]
    total = {row[0].value: row for row in book["Tổng hợp"].iter_rows(min_row=5)}
    assert [c.value for c in total["tinh"][6:9]] == [18, 16, 14]
    assert [c.value for c in total["p1"][6:9]] == [4, 4, 4]
    wave2 = {row[0].value: row for row in book["Đợt 2"].iter_rows(min_row=5)}
    assert [c.value for c in wave2["p1"][6:9]] == [4, 1, 1]
    # everyone registered is on the list, the Sốp Cộp cadres too (4, not in this campaign)
    assert book["Danh sách"].max_row == 4 + 18 + 4

    done = loa(deployment, "--campaign", "vneid", "--kind", "final", "--format", "xlsx",
               "--out", "sop-cop.xlsx")
    assert done.returncode == 0, done.stderr
    book = load_workbook(deployment / "sop-cop.xlsx")
    assert book.sheetnames[-4:] == ["Cán bộ", "Khen cá nhân", "Tập thể", "Người dân"]
    assert [c.value for c in book["Khen cá nhân"][5][:2]] == [1, "Lò Văn Một"]
    assert book["Người dân"].max_row == 4 + 89


async def test_cadres_at_a_wave_deadline(deployment: Path) -> None:
    done = loa(deployment, "--campaign", "vneid", "--kind", "cadres", "--wave", "Đợt 1")
    assert done.returncode == 0, done.stderr
    assert "tính đến hết ngày 12/05/2023" in done.stdout
    ba = next(line for line in done.stdout.splitlines() if "Cà Văn Ba" in line)
    assert "Chưa đạt" in ba  # 9 of 10 by 12/5: S1 came on 20/5


async def test_mistakes_get_a_vietnamese_answer(deployment: Path) -> None:
    done = loa(deployment, "--campaign", "khong_co")
    assert done.returncode == 2
    assert "không có chiến dịch 'khong_co' (các chiến dịch: thu_thach, vneid)" in done.stderr
    done = loa(deployment, "--campaign", "thu_thach", "--wave", "Đợt 9")
    assert done.returncode == 2 and 'các đợt: "Đợt 1", "Đợt 2"' in done.stderr
    done = loa(deployment, "--campaign", "thu_thach", "--org", "khong-co")
    assert done.returncode == 2 and "không có đơn vị 'khong-co'" in done.stderr
