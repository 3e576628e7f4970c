"""`loa chat` driven as a person would: a real subprocess, lines piped to its stdin."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from bots.records.models import ChannelIdentity, EvidenceItem, Participant
from bots.settings import sqlite_url
from tests.bots.conftest import FLOWS, REPO


def run_chat(data_dir: Path, lines: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(data_dir), LOA_CONFIG=str(FLOWS), PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", "chat", *extra],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env=env,
        timeout=120,
    )


async def _records(data_dir: Path) -> tuple[list[Participant], list[ChannelIdentity],
                                            list[EvidenceItem]]:
    engine = create_async_engine(sqlite_url(data_dir / "loa.sqlite3"))
    try:
        async with AsyncSession(engine) as db:
            return (
                list((await db.scalars(select(Participant))).all()),
                list((await db.scalars(select(ChannelIdentity))).all()),
                list((await db.scalars(select(EvidenceItem))).all()),
            )
    finally:
        await engine.dispose()


def test_registration_and_an_image_in_the_terminal(tmp_path: Path) -> None:
    shot = tmp_path / "vneid.png"
    buffer = io.BytesIO()
    Image.new("RGB", (300, 600), "teal").save(buffer, "PNG")
    shot.write_bytes(buffer.getvalue())
    not_an_image = tmp_path / "ghi-chu.txt"
    not_an_image.write_text("chỉ là chữ", encoding="utf-8")
    data_dir = tmp_path / "var"

    result = run_chat(
        data_dir,
        [
            "2",  # the menu's second button: Đăng ký thông tin
            "đồng ý",
            "Trần Thị Bình",
            "Chi đoàn Khu phố 2",
            "1",  # Đoàn viên
            "binh.tran@gmail.com",
            "0987 654 321",
            "Đúng rồi",
            "menu",
            "Tham gia thử thách",
            "Thực hiện thôi nào",
            f"/image {not_an_image}",
            f"/image {shot}",
            "/quit",
        ],
        "--user", "binh",
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "  2. Đăng ký thông tin" in out  # choices as numbered lines
    assert "Bạn đồng ý chứ?" in out
    assert "đăng ký thành công" in out
    assert "Chào Trần Thị Bình" in out
    assert "không phải là ảnh" in out  # the text file, refused with the upload's own check
    assert "Bước 2/4" in out  # the image was accepted as the first evidence
    assert str(data_dir / "media") in out  # sample images shown by where they are
    assert out.rstrip().endswith("Tạm biệt!")

    participants, identities, evidence = asyncio.run(_records(data_dir))
    assert [p.name for p in participants] == ["Trần Thị Bình"]
    assert participants[0].phone == "+84987654321"
    assert [(i.channel.value, i.user_id) for i in identities] == [("console", "binh")]
    assert [e.criterion for e in evidence] == ["vneid"]
    assert (data_dir / "files" / evidence[0].file_path).read_bytes() == shot.read_bytes()


def test_a_broken_flows_file_is_refused_with_its_position(tmp_path: Path) -> None:
    broken = tmp_path / "flows.yaml"
    broken.write_text("flows:\n  a:\n    steps:\n      - say: hi\n        goto: nowhere\n",
                      encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(LOA_DATA_DIR=str(tmp_path / "var"), LOA_CONFIG=str(broken))
    for command in ("chat", "serve"):
        result = subprocess.run(
            [sys.executable, "-m", "bots.cli", command, "--config", str(broken)],
            input="", capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
        )
        assert result.returncode == 1
        assert "flows.yaml:5:" in result.stderr  # file:line:column of the bad target
        assert "Loa đang chạy" not in result.stdout
