"""The manifest of a backup: every part with its SHA-256 and size, and a checksum of itself.

`manifest.json` sits at the top of a backup folder (or of the folder inside a backup .tar):

    {"format": "loa-backup", "version": 1, "created_at": "2026-05-09T10:00:00Z",
     "data_dir": "/srv/loa/var",
     "records": {"kind": "sqlite", "path": "data/loa.sqlite3", "rows": {"participants": 12, …}},
     "state": {"kind": "sqlite", "path": "data/state.sqlite3"},
     "parts": [{"path": "data/files/ab/cd/abcd…", "sha256": "abcd…", "size": 48213}, …],
     "missing_files": [], "notes": [], "checksum": "<sha256 of everything above>"}

`checksum` is the SHA-256 of the manifest's canonical JSON without that key, so a manifest
edited or damaged after the fact is refused as a whole, before any part is looked at.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import orjson

FORMAT = "loa-backup"
VERSION = 1
NAME = "manifest.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """The manifest is unreadable, damaged or does not match the backup (Vietnamese)."""


@dataclass(frozen=True, slots=True)
class Part:
    path: str  # POSIX, relative to the backup's top folder
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    created_at: str
    data_dir: str
    records: dict[str, Any]  # kind: sqlite | postgresql; path (None: not in the backup); rows
    state: dict[str, Any]  # kind: sqlite | redis | none; path
    parts: tuple[Part, ...]
    missing_files: tuple[str, ...] = ()  # evidence hashes the records name but no file had
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at,
            "data_dir": self.data_dir,
            "records": self.records,
            "state": self.state,
            "parts": [{"path": p.path, "sha256": p.sha256, "size": p.size} for p in self.parts],
            "missing_files": list(self.missing_files),
            "notes": list(self.notes),
            **self.extra,
        }

    def dumps(self) -> bytes:
        body = self.body()
        body["checksum"] = checksum(body)
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @property
    def total_size(self) -> int:
        return sum(part.size for part in self.parts)

    def part(self, path: str) -> Part | None:
        for part in self.parts:
            if part.path == path:
                return part
        return None


def checksum(body: dict[str, Any]) -> str:
    canonical = {k: v for k, v in body.items() if k != "checksum"}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def safe_path(path: object) -> str:
    """A part's path, refused if it could point outside the folder it is restored into."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        raise ManifestError(f"đường dẫn không hợp lệ trong bản kê: {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(piece in ("", ".", "..") for piece in path.split("/")):
        raise ManifestError(f"đường dẫn không hợp lệ trong bản kê: {path!r}")
    return path


def loads(data: bytes) -> Manifest:
    """Parse and check a manifest; `ManifestError` says what is wrong (Vietnamese)."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ManifestError("bản kê (manifest.json) bị hỏng: không đọc được JSON") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ManifestError("manifest.json không phải bản kê sao lưu của Loa")
    if body.get("version") != VERSION:
        raise ManifestError(
            f"bản sao lưu định dạng {body.get('version')!r}; phiên bản Loa này đọc {VERSION}"
        )
    if body.get("checksum") != checksum(body):
        raise ManifestError(
            "bản kê (manifest.json) bị hỏng hoặc bị sửa: mã kiểm tra không khớp"
        )
    try:
        parts = tuple(
            Part(safe_path(item["path"]), str(item["sha256"]), int(item["size"]))
            for item in body["parts"]
        )
        manifest = Manifest(
            created_at=str(body["created_at"]),
            data_dir=str(body["data_dir"]),
            records=dict(body["records"]),
            state=dict(body["state"]),
            parts=parts,
            missing_files=tuple(body.get("missing_files") or ()),
            notes=tuple(body.get("notes") or ()),
        )
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, ManifestError):
            raise
        raise ManifestError(f"bản kê thiếu hoặc sai trường: {error}") from None
    seen: set[str] = set()
    for part in parts:
        if not _SHA256.fullmatch(part.sha256) or part.size < 0:
            raise ManifestError(f"bản kê ghi sai mã băm hoặc cỡ của {part.path}")
        if part.path in seen:
            raise ManifestError(f"bản kê ghi {part.path} hai lần")
        seen.add(part.path)
    return manifest


__all__ = [
    "FORMAT",
    "NAME",
    "VERSION",
    "Manifest",
    "ManifestError",
    "Part",
    "checksum",
    "loads",
    "safe_path",
]
