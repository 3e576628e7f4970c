"""Content-addressed file storage."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bots.records.files import BadHash, FileStore, relative_path


def test_put_stores_under_its_hash_and_reads_back(tmp_path: Path) -> None:
    files = FileStore.for_data_dir(tmp_path)
    data = b"\x89PNG fake screenshot"
    sha = files.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert files.path(sha) == tmp_path / "files" / sha[:2] / sha[2:4] / sha
    assert relative_path(sha) == f"{sha[:2]}/{sha[2:4]}/{sha}"
    with files.open(sha) as handle:
        assert handle.read() == data
    assert files.read(sha) == data
    assert files.exists(sha)
    # The same bytes again: same hash, one file, no temporary files left behind.
    mtime = os.stat(files.path(sha)).st_mtime_ns
    assert files.put(data) == sha
    assert os.stat(files.path(sha)).st_mtime_ns == mtime
    assert [p.name for p in files.path(sha).parent.iterdir()] == [sha]


def test_delete(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    sha = files.put(b"x")
    assert files.delete(sha) is True
    assert not files.exists(sha)
    assert files.delete(sha) is False
    with pytest.raises(FileNotFoundError):
        files.open(sha)


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "ab", "A" * 64, "g" * 64, "0" * 63 + "/", "0" * 65, ""]
)
def test_anything_but_a_hash_is_refused(tmp_path: Path, bad: str) -> None:
    files = FileStore(tmp_path)
    with pytest.raises(BadHash):
        files.path(bad)


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = FileStore(tmp_path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.put(b"half written")
    sha = hashlib.sha256(b"half written").hexdigest()
    assert not files.exists(sha)
    assert list(files.path(sha).parent.iterdir()) == []


async def test_async_helpers(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    sha = await files.put_async(b"async")
    assert files.read(sha) == b"async"
    assert await files.delete_async(sha) is True
