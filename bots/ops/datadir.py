"""Who is using a data directory: a lock file every running Loa process holds.

`loa serve` and `loa chat` hold a *shared* `flock` on `<data_dir>/loa.lock` for as long as they
run (several processes may share one data directory: the embedded stores support it), and
`loa backup` holds one while it copies. `loa restore` needs the *exclusive* lock: it cannot get
it while any of them runs. The kernel drops a lock when its process dies, however it dies, so a
crashed server never leaves a stale lock behind (which a pid file would). Who holds it is read
from the kernel's lock table, for the operator's error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import IO

LOCK_NAME = "loa.lock"


class DataDirBusy(RuntimeError):
    """Another Loa process uses the data directory (message in Vietnamese)."""


class DataDirLock:
    """A held lock on a data directory; `release()` (or process exit) lets it go."""

    def __init__(self, path: Path, handle: IO[str], exclusive: bool) -> None:
        self.path = path
        self.exclusive = exclusive
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOCK_NAME


def _open(data_dir: Path) -> IO[str]:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return lock_path(data_dir).open("a", encoding="utf-8")


def hold_shared(data_dir: Path) -> DataDirLock:
    """Take the shared lock (a running server). Blocks only while a restore holds it
    exclusively, which lasts seconds."""
    handle = _open(data_dir)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    except BaseException:
        handle.close()
        raise
    return DataDirLock(lock_path(data_dir), handle, exclusive=False)


def hold_exclusive(data_dir: Path) -> DataDirLock:
    """Take the exclusive lock without waiting; `DataDirBusy` when a server (or a backup)
    runs on the directory."""
    handle = _open(data_dir)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        pids = holders(data_dir)
        who = f" (tiến trình {', '.join(map(str, pids))})" if pids else ""
        raise DataDirBusy(
            f"{data_dir}: Loa đang chạy trên thư mục dữ liệu này{who}. Dừng `loa serve` "
            "(và mọi `loa chat`, `loa backup`) trước, hoặc thêm --force nếu chắc chắn."
        ) from None
    except BaseException:
        handle.close()
        raise
    return DataDirLock(lock_path(data_dir), handle, exclusive=True)


def holders(data_dir: Path) -> list[int]:
    """Pids of the processes holding the lock, from the kernel's lock table (Linux
    `/proc/locks`); empty where there is none. For messages only."""
    try:
        inode = lock_path(data_dir).stat().st_ino
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    pids: list[int] = []
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  READ  28640 fd:01:1234567 0 EOF" (blocked waiters: "->")
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        try:
            pid = int(fields[4])
            lock_inode = int(fields[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        if lock_inode == inode and pid not in pids:
            pids.append(pid)
    return pids


def in_use(data_dir: Path) -> bool:
    """Whether some process holds the lock now (without taking it for long)."""
    if not lock_path(data_dir).exists():
        return False
    try:
        lock = hold_exclusive(data_dir)
    except DataDirBusy:
        return True
    lock.release()
    return False


__all__ = [
    "LOCK_NAME",
    "DataDirBusy",
    "DataDirLock",
    "hold_exclusive",
    "hold_shared",
    "holders",
    "in_use",
    "lock_path",
]
