"""Backup and restore on real SQLite files, real evidence files and real processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from bots.ops import manifest as mf
from bots.ops.backup import backup
from bots.ops.datadir import DataDirBusy, hold_shared
from bots.ops.manifest import ManifestError
from bots.ops.restore import restore, verify
from bots.records.models import EvidenceItem
from bots.records.writer import apply
from bots.state import open_store
from flows.events import EvidenceSaved, FieldSaved
from flows.vocab import Attachment, Channel, ConversationKey
from tests.required import missing

from .conftest import World, blob, file_hashes, table_dump

REPO = Path(__file__).resolve().parents[2]


async def _with_a_session(world: World) -> ConversationKey:
    """A conversation in the embedded store: a session and an undelivered reply."""
    store = await open_store(data_dir=world.settings.data_dir)
    key = ConversationKey("tan-phu", Channel.WEBCHAT, "user-state-000000000000")
    try:
        await store.accept(key, "m1", b'["text","m1",1,"xin chao"]')
        claim = await store.claim(key, "owner-1")
        assert claim is not None
        await store.commit(claim, b'{"flow":"dang_ky"}', claim.items[-1].seq, [b'["Ch\xc3\xa0o"]'])
    finally:
        await store.close()
    return key


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tar"])
async def test_backup_then_restore_into_an_empty_data_dir_loses_nothing(
    world: World, tmp_path: Path, as_tar: bool
) -> None:
    key = await _with_a_session(world)
    data_dir = world.settings.data_dir
    secret = data_dir / "citizen-id.key"  # the reports' key file: owner-only, and backed up
    secret.write_text("00" * 32 + "\n")
    secret.chmod(0o600)
    records_before = table_dump(world.records_path)
    state_before = table_dump(data_dir / "state.sqlite3")
    files_before = file_hashes(data_dir)
    assert len([p for p in files_before if p.startswith("files/")]) == 5  # AN SHARED BINH CHI DUNG

    report = backup(world.settings, tmp_path / "backups", tar=as_tar)
    assert report.path.stat().st_mode & 0o077 == 0  # personal data: the owner's only
    assert report.path.name.startswith("loa-backup-")
    assert report.path.suffix == (".tar" if as_tar else "")
    assert report.manifest.records["rows"]["participants"] == 4
    assert report.manifest.missing_files == ()
    await world.db.close()  # the server is stopped before a restore

    shutil.rmtree(data_dir)  # the disk is lost
    result = restore(world.settings, report.path)
    assert result.previous is None  # nothing was there to move aside

    assert table_dump(world.records_path) == records_before
    assert table_dump(data_dir / "state.sqlite3") == state_before
    assert file_hashes(data_dir) == files_before
    assert secret.stat().st_mode & 0o777 == 0o600
    for label, sha in world.shas.items():
        assert hashlib.sha256(world.files.read(sha)).hexdigest() == sha, label
    # The restored conversation store still holds the reply and the session.
    store = await open_store(data_dir=data_dir)
    try:
        assert [item.payload for item in await store.outbox_read(key)] == [b'["Ch\xc3\xa0o"]']
    finally:
        await store.close()


async def test_restore_over_existing_data_keeps_the_old_data_aside(
    world: World, tmp_path: Path
) -> None:
    report = backup(world.settings, tmp_path / "backups")
    before = table_dump(world.records_path)
    # Later changes the restore must undo.
    await apply(world.db.sessions, world.keys["an"], "late", [FieldSaved("ho_ten", "Tên Mới")],
                datetime.now(UTC))
    late_file = world.files.put(b"a file written after the backup")
    await world.db.close()

    result = restore(world.settings, report.path)
    assert result.previous is not None and result.previous.is_dir()
    assert table_dump(world.records_path) == before
    assert not world.files.exists(late_file)
    assert (result.previous / "files" / late_file[:2] / late_file[2:4] / late_file).is_file()


async def test_a_backup_taken_while_the_bot_writes_is_consistent(
    world: World, tmp_path: Path
) -> None:
    """The writer keeps storing evidence files and rows (files first, as the pipeline does)
    while the backup runs in another thread: the restored records are a consistent snapshot
    and every file they name is in it."""
    key = world.keys["dung"]
    stop = asyncio.Event()
    written: list[str] = []

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            sha = await world.files.put_async(blob(f"live-{n}", 4000))
            attachment = Attachment(mime="image/png", size=4000, sha256=sha)
            await apply(world.db.sessions, key, f"live-{n}",
                        [EvidenceSaved("cds_moi", f"live_{n}", attachment=attachment)],
                        datetime.now(UTC))
            written.append(sha)
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.3)
    at_start = len(written)
    report = await asyncio.to_thread(backup, world.settings, tmp_path / "backups")
    stop.set()
    await task
    at_end = len(written)
    assert at_end > at_start  # the writer really wrote during the backup
    source = table_dump(world.records_path)
    await world.db.close()

    scratch = tmp_path / "restored"
    restored_settings = replace(
        world.settings,
        data_dir=scratch,
        database_url=f"sqlite+aiosqlite:///{scratch / 'loa.sqlite3'}",
    )
    restore(restored_settings, report.path)
    restored = table_dump(scratch / "loa.sqlite3")
    assert sqlite3.connect(scratch / "loa.sqlite3").execute("PRAGMA integrity_check").fetchone() \
        == ("ok",)
    # A snapshot: every restored row exists in the source (rows the writer only appends are
    # identical), and the evidence rows are a prefix of what the writer wrote (nothing
    # half-written, nothing reordered).
    for table, rows in restored.items():
        assert {row[0] for row in rows} <= {row[0] for row in source[table]}, table
    for table in ("evidence_items", "processed_inbound", "participants"):
        assert set(restored[table]) <= set(source[table]), table
    con = sqlite3.connect(scratch / "loa.sqlite3")
    criteria = [row[0] for row in con.execute("SELECT criterion FROM evidence_items")]
    named = {row[0] for row in con.execute(
        "SELECT sha256 FROM evidence_items WHERE sha256 IS NOT NULL")}
    con.close()
    numbers = sorted(int(c.split("_")[1]) for c in criteria if c.startswith("live_"))
    assert numbers == list(range(1, len(numbers) + 1))
    assert at_start <= len(numbers) <= at_end
    assert report.manifest.records["rows"]["evidence_items"] == len(restored["evidence_items"])
    # Every file a restored row names is there, with the right bytes.
    for sha in named:
        path = scratch / "files" / sha[:2] / sha[2:4] / sha
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


async def test_a_second_backup_links_the_files_it_already_has(
    world: World, tmp_path: Path
) -> None:
    first = backup(world.settings, tmp_path / "backups")
    new = world.files.put(b"only in the second backup")
    second = backup(world.settings, tmp_path / "backups")
    assert (first.copied, first.linked) == (5 + 2, 0)  # 5 evidence files, a bundle, a medium
    assert second.linked == 5 and second.copied == 3
    sha = world.shas["AN"]
    rel = Path("data/files") / sha[:2] / sha[2:4] / sha
    assert (first.path / rel).stat().st_ino == (second.path / rel).stat().st_ino
    assert (second.path / "data/files" / new[:2] / new[2:4] / new).is_file()
    # Each backup is complete on its own: the first can go.
    shutil.rmtree(first.path)
    assert verify(second.path).part(rel.as_posix()) is not None


async def test_restore_refuses_a_damaged_manifest_and_changes_nothing(
    world: World, tmp_path: Path
) -> None:
    report = backup(world.settings, tmp_path / "backups")
    await world.db.close()
    before = file_hashes(world.settings.data_dir), table_dump(world.records_path)
    manifest_path = report.path / mf.NAME
    original = manifest_path.read_bytes()

    # A part's size edited in the manifest: its checksum no longer matches.
    body = orjson.loads(original)
    body["parts"][0]["size"] += 1
    manifest_path.write_bytes(orjson.dumps(body))
    with pytest.raises(ManifestError, match="mã kiểm tra không khớp"):
        restore(world.settings, report.path)

    # Not JSON at all.
    manifest_path.write_bytes(original[: len(original) // 2])
    with pytest.raises(ManifestError, match="không đọc được JSON"):
        restore(world.settings, report.path)

    # The manifest intact but an evidence file damaged in the backup.
    manifest_path.write_bytes(original)
    sha = world.shas["CHI"]
    damaged = report.path / "data/files" / sha[:2] / sha[2:4] / sha
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="không khớp với bản kê"):
        restore(world.settings, report.path)

    assert (file_hashes(world.settings.data_dir), table_dump(world.records_path)) == before
    assert not [p for p in world.settings.data_dir.iterdir() if p.name.startswith(".restore-")]


async def test_restore_refuses_a_tar_with_a_path_outside_the_backup(
    world: World, tmp_path: Path
) -> None:
    """A crafted archive whose manifest names `../` is refused before anything is written."""
    report = backup(world.settings, tmp_path / "backups")
    body = orjson.loads((report.path / mf.NAME).read_bytes())
    body["parts"].append({"path": "../../evil", "sha256": "0" * 64, "size": 1})
    body["checksum"] = mf.checksum(body)
    (report.path / mf.NAME).write_bytes(orjson.dumps(body))
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as archive:
        archive.add(report.path, arcname=report.path.name)
    with pytest.raises(ManifestError, match="đường dẫn không hợp lệ"):
        restore(world.settings, evil)
    assert not (world.settings.data_dir.parent / "evil").exists()


async def test_restore_refuses_while_a_process_holds_the_data_dir(
    world: World, tmp_path: Path
) -> None:
    report = backup(world.settings, tmp_path / "backups")
    data_dir = world.settings.data_dir
    # Another process (a running server) holds the shared lock.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from bots.ops.datadir import hold_shared\n"
         f"lock = hold_shared(Path({str(data_dir)!r}))\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy, match=f"tiến trình {holder.pid}"):
            restore(world.settings, report.path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    await world.db.close()
    restore(world.settings, report.path)  # the process is gone: the lock went with it


async def test_a_backup_holds_the_shared_lock_so_restores_wait(
    world: World, tmp_path: Path
) -> None:
    report = backup(world.settings, tmp_path / "backups")
    lock = hold_shared(world.settings.data_dir)  # as `loa backup` does while it copies
    try:
        with pytest.raises(DataDirBusy):
            restore(world.settings, report.path)
    finally:
        lock.release()


async def test_backup_refuses_to_write_inside_the_data_dir(world: World) -> None:
    from bots.ops.backup import BackupError

    with pytest.raises(BackupError, match="không được nằm trong LOA_DATA_DIR"):
        backup(world.settings, world.settings.data_dir / "backups")


async def test_a_records_database_outside_the_data_dir_is_backed_up_and_restored(
    tmp_path: Path,
) -> None:
    from bots.records.db import open_database
    from bots.settings import from_env

    records = tmp_path / "elsewhere" / "records.sqlite3"
    settings = from_env({"LOA_DATA_DIR": str(tmp_path / "var"),
                         "LOA_DATABASE_URL": f"sqlite+aiosqlite:///{records}"})
    db = await open_database(settings.database_url)
    key = ConversationKey("tan-phu", Channel.WEBCHAT, "someone-0000000000000")
    await apply(db.sessions, key, "1", [FieldSaved("ho_ten", "Người Ở Xa")], datetime.now(UTC))
    await db.close()
    report = backup(settings, tmp_path / "backups")
    assert report.manifest.records["path"] == "records.sqlite3"
    before = table_dump(records)
    records.unlink()
    restore(settings, report.path)
    assert table_dump(records) == before


async def test_postgres_records_are_dumped_with_pg_dump(
    tmp_path: Path, postgres_url: str
) -> None:
    from bots.records.db import open_database
    from bots.settings import from_env

    if shutil.which("pg_dump") is None:
        missing("pg_dump is not installed (apt-get install -y postgresql-client)")
    db = await open_database(postgres_url)
    key = ConversationKey("tan-phu", Channel.WEBCHAT, "pg-person-000000000000")
    await apply(db.sessions, key, "1", [FieldSaved("ho_ten", "Người Trong Postgres")],
                datetime.now(UTC) - timedelta(minutes=1))
    async with db.reads() as session:
        assert await session.scalar(select(func.count()).select_from(EvidenceItem)) == 0
    await db.close()
    settings = from_env({"LOA_DATA_DIR": str(tmp_path / "var"), "LOA_DATABASE_URL": postgres_url})
    report = backup(settings, tmp_path / "backups")
    assert report.manifest.records == {"kind": "postgresql", "path": "records.pgdump"}
    dump = report.path / "records.pgdump"
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True,
                             check=True).stdout
    assert "TABLE DATA public participants" in listing
    result = restore(settings, report.path)
    assert any("pg_restore --clean --if-exists" in note for note in result.notes)
    # Never run against the database by itself: the dump is the operator's to restore.
    assert os.path.getsize(dump) == report.manifest.part("records.pgdump").size  # type: ignore[union-attr]
