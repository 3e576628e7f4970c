"""`loa restore BACKUP`: put a backup (folder or .tar) back into the data directory, or nothing.

    report = restore(settings, Path("/srv/backups/loa-backup-20260509T100000Z"))

1. Takes the data directory's exclusive lock: refused while `loa serve`, `loa chat` or
   `loa backup` runs on it (bots/ops/datadir.py), unless `force`.
2. Reads and checks the manifest (its own checksum, then that the records kind matches
   LOA_DATABASE_URL) and that the disk has room for a second copy.
3. Copies every part into `<data_dir>/.restore-<time>/`, checking each SHA-256 and size on the
   way, and runs SQLite's `quick_check` on the databases. Any mismatch: the staging folder is
   removed and nothing in the data directory has changed.
4. Swaps: everything the data directory held moves into `<data_dir>/before-restore-<time>/`
   (renames, no copying), then the staged entries move in. A failure half-way moves everything
   back. The old data stays in `before-restore-<time>/` until the operator deletes it.

PostgreSQL records are not restored automatically (a production database is not something to
overwrite unasked): the report says how to run `pg_restore` on the backup's `records.pgdump`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sqlite3
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from bots.ops import manifest as mf
from bots.ops.backup import CHUNK, SIDECARS, is_postgres, pg_guidance, sqlite_path
from bots.ops.datadir import LOCK_NAME, DataDirBusy, DataDirLock, hold_exclusive
from bots.ops.manifest import Manifest, ManifestError, Part
from bots.settings import Settings

log = logging.getLogger("loa.ops.restore")

SPARE = 64 * 2**20  # bytes to leave free on top of the staged copy


class RestoreError(RuntimeError):
    """Restore refused or failed; nothing in the data directory changed (Vietnamese)."""


@dataclass(slots=True)
class RestoreReport:
    manifest: Manifest
    previous: Path | None  # where the data directory's former content now is
    restored: int = 0  # parts put in place
    notes: list[str] = field(default_factory=list)


# -- reading a backup ----------------------------------------------------------------------------


class _Source:
    """A backup folder or .tar, read part by part."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._top = ""
        if path.is_dir():
            return
        if not path.is_file():
            raise RestoreError(f"{path}: không có bản sao lưu ở đây")
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
        except (tarfile.TarError, OSError) as error:
            raise RestoreError(f"{path}: không đọc được tệp .tar ({error})") from None
        tops = {
            member.name.split("/", 1)[0] for member in self._tar.getmembers() if member.name
        }
        if len(tops) != 1:
            raise RestoreError(f"{path}: tệp .tar không phải một bản sao lưu của Loa")
        self._top = tops.pop() + "/"

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def mode(self, rel: str) -> int | None:
        """A part's permission bits as the backup keeps them."""
        try:
            if self._tar is None:
                return (self.path / rel).stat().st_mode & 0o777
            return self._tar.getmember(self._top + rel).mode & 0o777
        except (OSError, KeyError):
            return None

    @contextmanager
    def open(self, rel: str) -> Iterator[IO[bytes]]:
        """A part's bytes; `FileNotFoundError` if the backup lacks it."""
        if self._tar is None:
            with (self.path / rel).open("rb") as handle:
                yield handle
            return
        try:
            member = self._tar.getmember(self._top + rel)
        except KeyError:
            raise FileNotFoundError(rel) from None
        # Only regular files are read; links and devices in a crafted archive are not parts.
        extracted = self._tar.extractfile(member) if member.isreg() else None
        if extracted is None:
            raise FileNotFoundError(rel)
        with extracted:
            yield extracted

    def manifest(self) -> Manifest:
        try:
            with self.open(mf.NAME) as handle:
                data = handle.read(256 * 2**20)
        except FileNotFoundError:
            raise ManifestError("bản sao lưu không có manifest.json") from None
        return mf.loads(data)


def verify(path: Path) -> Manifest:
    """Check a backup without restoring it: the manifest and every part's hash and size."""
    source = _Source(path)
    try:
        manifest = source.manifest()
        for part in manifest.parts:
            _copy_part(source, part, None)
        return manifest
    finally:
        source.close()


def _copy_part(source: _Source, part: Part, target: Path | None) -> None:
    """Copy one part to `target` (None: only check it), refusing a hash or size mismatch."""
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open(part.path) as src:
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
            out = target.open("wb") if target is not None else None
            try:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if out is not None:
                        out.write(chunk)
            finally:
                if out is not None:
                    out.close()
    except FileNotFoundError:
        raise ManifestError(f"bản sao lưu thiếu {part.path}") from None
    if size != part.size or digest.hexdigest() != part.sha256:
        raise ManifestError(f"{part.path} không khớp với bản kê: bản sao lưu đã hỏng")
    mode = source.mode(part.path) if target is not None else None
    if target is not None and mode is not None:
        os.chmod(target, mode)


# -- the restore ---------------------------------------------------------------------------------


def restore(
    settings: Settings,
    backup_path: Path,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> RestoreReport:
    """Restore `backup_path` into `settings`' data directory (see the module docstring).
    Raises `RestoreError` / `ManifestError` / `DataDirBusy` with nothing changed."""
    data_dir = settings.data_dir.resolve()
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    lock: DataDirLock | None = None
    notes: list[str] = []
    try:
        lock = hold_exclusive(data_dir)
    except DataDirBusy:
        if not force:
            raise
        notes.append("Khôi phục khi Loa vẫn đang chạy (--force): hãy khởi động lại loa serve.")
    source = _Source(backup_path.expanduser().resolve())
    try:
        manifest = source.manifest()
        records_target = _check_fits(settings, manifest, data_dir)
        stage = data_dir / f".restore-{stamp}"
        previous = data_dir / f"before-restore-{stamp}"
        if stage.exists() or previous.exists():
            raise RestoreError(f"{stage} đã có: chạy lại sau một giây")
        try:
            for part in manifest.parts:
                if part.path == "records.pgdump":
                    continue  # restored by pg_restore, by hand
                _copy_part(source, part, stage / part.path)
            _check_databases(stage, manifest)
            report = RestoreReport(manifest, None, len(manifest.parts), notes)
            if any(p.path.startswith("data/") for p in manifest.parts) or records_target:
                report.previous = _swap(data_dir, stage, previous, records_target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if manifest.records.get("kind") == "postgresql":
            dump = manifest.records.get("path")
            where = (
                f"{backup_path / dump}" if dump and backup_path.is_dir()
                else f"{dump} trong {backup_path}" if dump else None
            )
            if where:
                notes.append(
                    f"Hồ sơ PostgreSQL chưa được khôi phục tự động. Tệp: {where}\n"
                    + pg_guidance(settings.database_url, str(dump))
                )
            else:
                notes.append(
                    "Bản sao lưu này không có hồ sơ PostgreSQL (lúc sao lưu thiếu pg_dump)."
                )
        if manifest.state.get("kind") == "redis" or settings.redis_url:
            notes.append("Phiên trò chuyện trong Redis không thuộc bản sao lưu: giữ nguyên Redis.")
        return report
    finally:
        source.close()
        if lock is not None:
            lock.release()


def _check_fits(settings: Settings, manifest: Manifest, data_dir: Path) -> Path | None:
    """Refuse a backup that does not fit this configuration; the records file to replace
    when the records SQLite lives outside the data directory (else None)."""
    kind = manifest.records.get("kind")
    target = sqlite_path(settings.database_url)
    if kind == "sqlite" and target is None:
        raise RestoreError(
            "Bản sao lưu có hồ sơ SQLite nhưng LOA_DATABASE_URL không phải SQLite: "
            "bỏ LOA_DATABASE_URL (hoặc trỏ về tệp SQLite) rồi khôi phục lại."
        )
    if kind == "postgresql" and not is_postgres(settings.database_url):
        raise RestoreError(
            "Bản sao lưu có hồ sơ PostgreSQL nhưng LOA_DATABASE_URL không phải PostgreSQL."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data_dir).free
    needed = manifest.total_size + SPARE
    if free < needed:
        raise RestoreError(
            f"Không đủ chỗ trống để khôi phục: cần {needed / 2**20:.0f} MB, còn "
            f"{free / 2**20:.0f} MB trên ổ chứa {data_dir}."
        )
    rel = manifest.records.get("path")
    if kind == "sqlite" and rel == "records.sqlite3" and target is not None:
        return target
    if kind == "sqlite" and isinstance(rel, str) and target is not None:
        expected = "data/" + target.relative_to(data_dir).as_posix() if (
            data_dir in target.parents
        ) else None
        if expected != rel:
            raise RestoreError(
                f"Hồ sơ trong bản sao lưu là {rel}, còn LOA_DATABASE_URL trỏ tới {target}: "
                "đặt LOA_DATABASE_URL như lúc sao lưu rồi khôi phục lại."
            )
    return None


def _check_databases(stage: Path, manifest: Manifest) -> None:
    for part in manifest.parts:
        path = stage / part.path
        if not path.is_file() or not _looks_sqlite(path):
            continue
        try:
            # Read-write (it is our staged copy): closing the last connection then removes the
            # -wal and -shm files a WAL-mode database gets on opening.
            con = sqlite3.connect(str(path))
            try:
                result = con.execute("PRAGMA quick_check").fetchone()
            finally:
                con.close()
        except sqlite3.Error as error:
            raise ManifestError(f"{part.path}: cơ sở dữ liệu hỏng ({error})") from None
        if not result or result[0] != "ok":
            raise ManifestError(f"{part.path}: cơ sở dữ liệu hỏng ({result})")


def _looks_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def _swap(
    data_dir: Path, stage: Path, previous: Path, records_target: Path | None
) -> Path | None:
    """Move the data directory's content aside and the staged content in; all or nothing.
    Returns where the former content went (None: there was none)."""
    previous.mkdir()
    moved_out: list[tuple[Path, Path]] = []  # (original place, where it went)
    moved_in: list[Path] = []
    try:
        for entry in sorted(data_dir.iterdir()):
            if entry.name == LOCK_NAME or entry in (stage, previous):
                continue
            if entry.name.startswith("before-restore-"):
                continue  # earlier restores' leftovers stay where the operator expects them
            aside = previous / entry.name
            os.replace(entry, aside)
            moved_out.append((entry, aside))
        staged_data = stage / "data"
        if staged_data.is_dir():
            for entry in sorted(staged_data.iterdir()):
                target = data_dir / entry.name
                os.replace(entry, target)
                moved_in.append(target)
        if records_target is not None:
            aside_dir = previous / "records-outside-data-dir"
            aside_dir.mkdir()
            for suffix in ("", *SIDECARS):
                old = records_target.with_name(records_target.name + suffix)
                if old.exists():
                    aside = aside_dir / old.name
                    shutil.move(old, aside)
                    moved_out.append((old, aside))
            records_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(stage / "records.sqlite3", records_target)
            moved_in.append(records_target)
        if not moved_out:  # the data directory was empty (a first start, a lost disk)
            shutil.rmtree(previous)
            return None
    except BaseException:
        log.exception("restore swap failed; putting the previous data back")
        for path in reversed(moved_in):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for original, aside in reversed(moved_out):
            shutil.move(aside, original)
        shutil.rmtree(previous, ignore_errors=True)
        raise
    return previous


# -- the command ---------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    from bots.settings import SettingsError, load

    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    path = Path(args.backup)
    try:
        report = restore(settings, path, force=bool(getattr(args, "force", False)))
    except DataDirBusy as error:
        print(f"Không khôi phục: {error}", file=sys.stderr)
        return 3
    except (RestoreError, ManifestError) as error:
        print(f"Không khôi phục: {error}. Thư mục dữ liệu giữ nguyên.", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as error:
        print(f"Khôi phục thất bại: {error}. Thư mục dữ liệu giữ nguyên.", file=sys.stderr)
        return 1
    manifest = report.manifest
    print(f"Đã khôi phục bản sao lưu lúc {manifest.created_at} vào {settings.data_dir}")
    if report.previous is not None:
        print(
            f"  Dữ liệu cũ được chuyển sang {report.previous} — xóa thư mục này khi đã kiểm tra "
            "xong."
        )
    for note in report.notes:
        print(f"Lưu ý: {note}")
    return 0


__all__ = ["RestoreError", "RestoreReport", "main", "restore", "verify"]
