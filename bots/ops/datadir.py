"""Who is using a data directory: a lock file every running Loa process holds.

`loa serve` and `loa chat` hold a *shared* `flock` on `<data_dir>/loa.lock` for as long as they
run (several processes may share one data directory: the embedded stores support it), and
`loa backup` holds one while it copies. `loa restore` needs the *exclusive* lock: it cannot get
it while any of them runs. The kernel drops a lock when its process dies, however it dies, so a
crashed server never leaves a stale lock behind (which a pid file would). The file also lists
the pids of the processes that hold it, for the operator's error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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
    # Opened for appending: taking a shared lock never truncates what others wrote.
    return lock_path(data_dir).open("a+", encoding="utf-8")


def hold_shared(data_dir: Path) -> DataDirLock:
    """Take the shared lock (a running server). Blocks only while a restore holds it
    exclusively, which lasts seconds."""
    handle = _open(data_dir)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        # Rewrite the list with the holders still alive, so it does not grow with restarts.
        alive = [pid for pid in holders(data_dir) if pid != os.getpid()]
        handle.seek(0)
        handle.truncate()
        handle.write("".join(f"{pid}\n" for pid in [*alive, os.getpid()]))
        handle.flush()
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
    # Nobody else holds it: the pids listed are all gone.
    handle.seek(0)
    handle.truncate()
    return DataDirLock(lock_path(data_dir), handle, exclusive=True)


def holders(data_dir: Path) -> list[int]:
    """Pids listed in the lock file whose process still exists (best effort, for messages)."""
    try:
        lines = lock_path(data_dir).read_text(encoding="utf-8").split()
    except OSError:
        return []
    alive: list[int] = []
    for line in lines:
        if not line.isdigit():
            continue
        pid = int(line)
        if pid in alive:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    return alive


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
