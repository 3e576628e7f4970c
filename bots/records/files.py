"""Content-addressed file storage: `<data_dir>/files/ab/cd/<sha256>`.

The same bytes are stored once whoever sends them. A file appears under its final name only
complete (written to a temporary file in the same folder tree, flushed, then renamed), so a
crash never leaves a half-written file behind a valid hash. Methods do blocking file I/O: call
them through `asyncio.to_thread` (or the `*_async` helpers) from the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BadHash(ValueError):
    """Not a lowercase hex SHA-256: refused before it can become a path."""


def check_hash(sha: str) -> str:
    if not _SHA256.fullmatch(sha):
        raise BadHash(f"not a sha256: {sha[:80]!r}")
    return sha


def relative_path(sha: str) -> str:
    """Where a hash lives below the files folder: `ab/cd/<sha256>` (POSIX separators)."""
    check_hash(sha)
    return f"{sha[:2]}/{sha[2:4]}/{sha}"


class FileStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_data_dir(cls, data_dir: str | Path) -> FileStore:
        return cls(Path(data_dir) / "files")

    def path(self, sha: str) -> Path:
        """The file of a hash (which may not exist). Raises `BadHash` for anything that is not
        a hash, so a request path can never walk out of the folder."""
        return self.root / relative_path(sha)

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, data: bytes) -> str:
        """Store `data`; returns its SHA-256 (hex). Storing the same bytes again is free."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.is_file():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def open(self, sha: str) -> BinaryIO:
        """Open a stored file for reading; `FileNotFoundError` if it is not there."""
        return self.path(sha).open("rb")

    def read(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()

    def delete(self, sha: str) -> bool:
        """Remove a stored file; False if it was not there."""
        try:
            self.path(sha).unlink()
        except FileNotFoundError:
            return False
        return True

    async def put_async(self, data: bytes) -> str:
        return await asyncio.to_thread(self.put, data)

    async def delete_async(self, sha: str) -> bool:
        return await asyncio.to_thread(self.delete, sha)


__all__ = ["BadHash", "FileStore", "check_hash", "relative_path"]
