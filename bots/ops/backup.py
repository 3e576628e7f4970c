"""`loa backup`: a consistent copy of a running deployment's data, with a manifest.

    report = backup(settings, out=Path("/srv/backups"))         # a folder
    report = backup(settings, out=Path("/srv/backups"), tar=True)  # one .tar file

What a backup holds (`<out>/loa-backup-20260509T100000Z/`):

    data/                 the data directory as it was (LOA_DATA_DIR):
      loa.sqlite3           the records (SQLite), copied with SQLite's online backup API
      state.sqlite3         the embedded conversation store, the same way
      files/ab/cd/<sha256>  evidence and certificates, content-addressed
      bundles/, media/      every flow version ever served, and the flows' sample images
    records.sqlite3       the records, when LOA_DATABASE_URL puts the SQLite file elsewhere
    records.pgdump        the records, when they are in PostgreSQL and `pg_dump` is on PATH
    manifest.json         every part with its SHA-256 and size (bots/ops/manifest.py)

Online and consistent: each SQLite file is copied in one step of the backup API, i.e. inside
one read transaction — a snapshot — while `loa serve` keeps writing (WAL mode lets writers go
on). The databases are copied before the files: files are stored before the rows that name
them, so every file the snapshot names exists already (only a purge in between could remove
one; such a file is listed under `missing_files`).

Incremental: stored files never change (their name is their hash), so a file already in the
newest earlier backup in the same folder is hard-linked from it instead of copied. Every
backup folder is still complete on its own; deleting an old one frees only what no other uses.

A backup is assembled under a `.partial` name and renamed when complete, so a folder named
`loa-backup-*` always holds a whole backup. `loa backup` holds the data directory's shared
lock meanwhile, so a restore cannot run under it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from bots.ops import manifest as mf
from bots.ops.datadir import LOCK_NAME, hold_shared
from bots.ops.manifest import Manifest, Part
from bots.settings import Settings

log = logging.getLogger("loa.ops.backup")

PREFIX = "loa-backup-"
PARTIAL = ".partial"
CHUNK = 1024 * 1024
SQLITE_HEADER = b"SQLite format 3\x00"
SIDECARS = ("-wal", "-shm", "-journal")
_FILE_NAME = re.compile(r"[0-9a-f]{64}")
RESTORE_LEFTOVERS = ("before-restore-", ".restore-")


class BackupError(RuntimeError):
    """The backup could not be made; the message is for the operator (Vietnamese)."""


@dataclass(slots=True)
class BackupReport:
    path: Path  # the backup folder, or the .tar
    manifest: Manifest
    copied: int = 0  # files copied
    linked: int = 0  # files hard-linked from the previous backup
    notes: list[str] = field(default_factory=list)


# -- where things are ----------------------------------------------------------------------------


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite records URL (None for any other database)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def is_sqlite_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def _skipped(name: str) -> bool:
    """Entries of the data directory a backup leaves out."""
    return (
        name == LOCK_NAME
        or name.startswith(RESTORE_LEFTOVERS)
        or name.endswith(SIDECARS)
    )


def _temporary(name: str) -> bool:
    # FileStore writes `.tmp-*` then renames; MediaLibrary writes `.<name>.<pid>.tmp`.
    return name.startswith(".tmp-") or name.endswith(".tmp")


def _walk(root: Path) -> Iterator[Path]:
    """Regular files below `root`, in a stable order; symbolic links are not followed."""
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if not _temporary(name) and path.is_file() and not path.is_symlink():
                yield path


# -- copying -------------------------------------------------------------------------------------


def copy_hashed(source: Path, target: Path) -> Part:
    """Copy `source` to `target` (folders created), hashing on the way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    shutil.copymode(source, target)  # a key file stays readable by its owner only
    return Part("", digest.hexdigest(), size)


def hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def snapshot_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API, in one step)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(str(source), timeout=30.0)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)  # pages=-1: all pages inside one read transaction
        finally:
            dst.close()
    finally:
        src.close()
    with target.open("rb") as handle:
        os.fsync(handle.fileno())


def table_rows(path: Path) -> dict[str, int]:
    """Rows per table of a SQLite file (the backup's snapshot)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            row[0]
            for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}
    finally:
        con.close()


def evidence_hashes(path: Path) -> set[str]:
    """The file hashes the records snapshot refers to."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            rows = con.execute(
                "SELECT DISTINCT sha256 FROM evidence_items WHERE sha256 IS NOT NULL"
            ).fetchall()
        except sqlite3.OperationalError:  # no such table: an empty, unmigrated database
            return set()
        return {row[0] for row in rows if row[0]}
    finally:
        con.close()


# -- PostgreSQL ----------------------------------------------------------------------------------


def libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for `pg_dump` (no password in it) and the environment that
    carries the password (`PGPASSWORD`), from a SQLAlchemy URL."""
    url = make_url(database_url)
    env: dict[str, str] = {}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    query: dict[str, str] = {}
    for key, value in url.query.items():
        first = value[0] if isinstance(value, tuple) else value
        if key in ("sslmode", "ssl"):  # asyncpg says ssl=require, libpq sslmode=require
            query["sslmode"] = "require" if first in ("true", "1") else str(first)
        elif key in ("application_name", "connect_timeout", "options", "sslrootcert"):
            query[key] = str(first)
    plain = url.set(drivername="postgresql", password=None, query=query)
    return plain.render_as_string(hide_password=False), env


def pg_guidance(database_url: str, dump: str = "loa-records.pgdump") -> str:
    target, env = libpq_target(database_url)
    password = "PGPASSWORD=… " if env else ""
    return (
        "Hồ sơ nằm trong PostgreSQL (LOA_DATABASE_URL). Sao lưu bằng pg_dump, ví dụ:\n"
        f"  {password}pg_dump --format=custom --no-owner --file={dump} --dbname={target}\n"
        "Khôi phục vào một cơ sở dữ liệu (đã dừng loa serve):\n"
        f"  {password}pg_restore --clean --if-exists --no-owner --dbname={target} {dump}\n"
        "Nếu dùng PostgreSQL có quản lý, bật thêm sao lưu tự động của nhà cung cấp."
    )


def run_pg_dump(pg_dump: str, database_url: str, target: Path) -> None:
    uri, extra = libpq_target(database_url)
    env = {**os.environ, **extra}
    result = subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", f"--file={target}", f"--dbname={uri}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=6 * 3600,
        check=False,
    )
    if result.returncode != 0:
        raise BackupError(f"pg_dump thất bại (mã {result.returncode}): {result.stderr.strip()}")


# -- the backup ----------------------------------------------------------------------------------


def default_out(settings: Settings) -> Path:
    """Next to the data directory, never inside it (a backup must not back itself up)."""
    return settings.data_dir.parent / "backups"


def previous_backup(out: Path) -> tuple[Path, Manifest] | None:
    """The newest complete backup folder in `out` (for hard links), if any."""
    if not out.is_dir():
        return None
    for folder in sorted(out.glob(f"{PREFIX}*"), reverse=True):
        if not folder.is_dir() or folder.name.endswith(PARTIAL):
            continue
        try:
            return folder, mf.loads((folder / mf.NAME).read_bytes())
        except (OSError, mf.ManifestError):
            continue
    return None


def _name(out: Path, now: datetime) -> str:
    base = PREFIX + now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 1
    while any((out / candidate).exists() for candidate in (name, name + ".tar", name + PARTIAL)):
        n += 1
        name = f"{base}-{n}"
    return name


def backup(
    settings: Settings,
    out: Path | None = None,
    *,
    tar: bool = False,
    now: datetime | None = None,
    pg_dump: str | None = None,
    use_pg_dump: bool = True,
) -> BackupReport:
    """Back up `settings`' data directory and records into a new folder (or .tar) in `out`.
    Raises `BackupError`; nothing half-made is left under a backup's name."""
    data_dir = settings.data_dir.resolve()
    out = (out or default_out(settings)).expanduser().resolve()
    if out == data_dir or data_dir in out.parents:
        raise BackupError(f"{out}: thư mục sao lưu không được nằm trong LOA_DATA_DIR ({data_dir})")
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir}: không có thư mục dữ liệu để sao lưu")
    now = now or datetime.now(UTC)
    out.mkdir(parents=True, exist_ok=True)
    name = _name(out, now)
    work = out / (name + PARTIAL)
    with hold_shared(data_dir):
        try:
            report = _assemble(settings, data_dir, work, now, out, pg_dump, use_pg_dump)
            final = out / name
            os.replace(work, final)
            report.path = final
            if tar:
                report.path = _to_tar(final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    os.sync()
    return report


def _assemble(
    settings: Settings,
    data_dir: Path,
    work: Path,
    now: datetime,
    out: Path,
    pg_dump: str | None,
    use_pg_dump: bool,
) -> BackupReport:
    # Backups hold personal data and the citizen-ID key: for the owner's eyes only.
    work.mkdir(mode=0o700)
    parts: list[Part] = []
    notes: list[str] = []
    records_file = sqlite_path(settings.database_url)
    state_file = None if settings.redis_url else settings.state_path.resolve()

    # 1. Databases first (see the module docstring), each a snapshot.
    snapshots: dict[Path, str] = {}  # source → path in the backup

    def place(path: Path, outside: str) -> str:
        if data_dir in path.parents:
            return "data/" + path.relative_to(data_dir).as_posix()
        return outside

    if state_file is not None and state_file.is_file():
        snapshots[state_file] = place(state_file, "state.sqlite3")
    if records_file is not None and records_file.is_file():
        snapshots[records_file] = place(records_file, "records.sqlite3")
    for entry in sorted(data_dir.iterdir()):
        # Another database someone keeps here gets the same care.
        if (
            entry.is_file()
            and not _skipped(entry.name)
            and entry not in snapshots
            and is_sqlite_file(entry)
        ):
            snapshots[entry] = f"data/{entry.name}"
    for source, rel in snapshots.items():
        snapshot_sqlite(source, work / rel)
        sha, size = hash_file(work / rel)
        parts.append(Part(rel, sha, size))

    records: dict[str, object]
    if records_file is not None:
        records_rel = snapshots.get(records_file)
        records = {"kind": "sqlite", "path": records_rel}
        if records_rel is not None:
            records["rows"] = table_rows(work / records_rel)
    elif is_postgres(settings.database_url):
        records = {"kind": "postgresql", "path": None}
        program = pg_dump or (shutil.which("pg_dump") if use_pg_dump else None)
        if program:
            run_pg_dump(program, settings.database_url, work / "records.pgdump")
            sha, size = hash_file(work / "records.pgdump")
            parts.append(Part("records.pgdump", sha, size))
            records["path"] = "records.pgdump"
        else:
            notes.append(
                "Không thấy pg_dump trên PATH nên bản sao lưu này KHÔNG có hồ sơ. "
                + pg_guidance(settings.database_url)
            )
    else:
        records = {"kind": make_url(settings.database_url).get_backend_name(), "path": None}
        notes.append(f"Không sao lưu được cơ sở dữ liệu {records['kind']}: tự sao lưu riêng.")

    if settings.redis_url:
        state: dict[str, object] = {"kind": "redis", "path": None}
        notes.append(
            "Phiên trò chuyện nằm trong Redis, không có trong bản sao lưu này: bật "
            "appendonly yes (và sao lưu tệp RDB/AOF) trên Redis."
        )
    else:
        state = {"kind": "sqlite", "path": snapshots.get(state_file) if state_file else None}

    # 2. Everything else in the data directory, content-addressed files linked when unchanged.
    previous = previous_backup(out)
    copied = linked = 0
    for entry in sorted(data_dir.iterdir()):
        if _skipped(entry.name) or entry in snapshots or entry.is_symlink():
            continue
        sources = [entry] if entry.is_file() else list(_walk(entry)) if entry.is_dir() else []
        for source in sources:
            rel = "data/" + source.relative_to(data_dir).as_posix()
            target = work / rel
            part = _link_from(previous, rel, source, target)
            if part is not None:
                linked += 1
            else:
                try:
                    part = copy_hashed(source, target)
                except FileNotFoundError:  # deleted while we walked (a purge): not backed up
                    continue
                copied += 1
                if rel.startswith("data/files/") and _FILE_NAME.fullmatch(source.name) and (
                    part.sha256 != source.name
                ):
                    notes.append(f"Tệp {source} không khớp với mã băm trong tên (hỏng trên đĩa).")
            parts.append(Part(rel, part.sha256, part.size))

    missing: list[str] = []
    snapshot = records.get("path")
    if records["kind"] == "sqlite" and isinstance(snapshot, str):
        present = {p.path.rsplit("/", 1)[-1] for p in parts if p.path.startswith("data/files/")}
        missing = sorted(evidence_hashes(work / snapshot) - present)
        if missing:
            notes.append(
                f"{len(missing)} tệp minh chứng có trong hồ sơ nhưng không có trên đĩa "
                "(có thể vừa bị xóa khi sao lưu)."
            )

    manifest = Manifest(
        created_at=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        data_dir=str(data_dir),
        records=records,
        state=state,
        parts=tuple(parts),
        missing_files=tuple(missing),
        notes=tuple(notes),
    )
    target = work / mf.NAME
    with target.open("wb") as handle:
        handle.write(manifest.dumps())
        handle.flush()
        os.fsync(handle.fileno())
    return BackupReport(work, manifest, copied, linked, notes)


def _link_from(
    previous: tuple[Path, Manifest] | None, rel: str, source: Path, target: Path
) -> Part | None:
    """Hard-link an unchanged content-addressed file from the previous backup."""
    if previous is None or not rel.startswith("data/files/"):
        return None
    folder, manifest = previous
    part = manifest.part(rel)
    if part is None or part.sha256 != source.name:
        return None
    try:
        if source.stat().st_size != part.size:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(folder / rel, target)
    except OSError:  # another filesystem, no hard links, or the old file is gone: copy
        return None
    return part


def _to_tar(folder: Path) -> Path:
    """Pack a finished backup folder into `<folder>.tar` (written under a temporary name)."""
    target = folder.with_name(folder.name + ".tar")
    partial = folder.with_name(folder.name + ".tar" + PARTIAL)
    try:
        # Not compressed: evidence is JPEG/PNG already; SQLite files compress, but the time
        # matters more on the deadline day than the space.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(
            fileobj=raw, mode="w", format=tarfile.PAX_FORMAT
        ) as archive:
            archive.add(folder, arcname=folder.name)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    shutil.rmtree(folder)
    return target


# -- the command ---------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    from bots.settings import SettingsError, load

    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if getattr(args, "out", None) else None
    try:
        report = backup(settings, out, tar=bool(getattr(args, "tar", False)))
    except (BackupError, OSError, sqlite3.Error) as error:
        print(f"Sao lưu thất bại: {error}", file=sys.stderr)
        return 1
    manifest = report.manifest
    size = manifest.total_size / 2**20
    print(f"Đã sao lưu vào {report.path}")
    print(
        f"  {len(manifest.parts)} phần, {size:.1f} MB; tệp chép mới: {report.copied}, "
        f"dùng lại từ lần trước: {report.linked}"
    )
    rows = manifest.records.get("rows")
    if isinstance(rows, dict):
        shown = ", ".join(
            f"{table} {count}"
            for table, count in rows.items()
            if table in ("participants", "submissions", "evidence_items")
        )
        if shown:
            print(f"  hồ sơ: {shown}")
    for note in report.notes:
        print(f"Lưu ý: {note}")
    return 0


__all__ = [
    "BackupError",
    "BackupReport",
    "backup",
    "default_out",
    "hash_file",
    "is_postgres",
    "libpq_target",
    "main",
    "pg_guidance",
    "previous_backup",
    "snapshot_sqlite",
    "sqlite_path",
    "table_rows",
]
