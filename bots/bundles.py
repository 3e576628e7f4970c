"""Every flow version Loa has run, kept so that a conversation finishes on the version it began.

`loa serve` copies each bundle that passed check — its YAML and CSV files, and the media it
references — into `<data dir>/bundles/<content hash>/` before serving it. After flows.yaml changes
and a restart, a session whose version is no longer current is served from that copy: the
`BundleArchive` loads and compiles it on first use (and caches it). This is the engine's archive.

The flows' own media (sample screenshots) are also copied, named by the SHA-256 of their content,
into `<data dir>/media/` and served at `/media/<sha256>.<ext>` (`MediaLibrary`): the URL is
unguessable, stable across restarts and machines with the same flows, and an old version keeps
its pictures after a file is edited. Evidence people send is never there: it lives in the
records' file store, which is never served publicly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

log = logging.getLogger("loa.bundles")

MEDIA_NAME = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{1,5}")
MEDIA_PREFIX = "/media/"
MEDIA_FIELDS = ("image", "file")

CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "pdf": "application/pdf",
}


def media_references(node: Any) -> list[str]:
    """Every `image:`/`file:` path a bundle (pydantic models, any depth) refers to."""
    found: list[str] = []
    for value in _walk(node):
        if isinstance(value, BaseModel):
            for name in MEDIA_FIELDS:
                ref = getattr(value, name, None)
                if isinstance(ref, str) and ref and ref not in found:
                    found.append(ref)
    return found


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        value = stack.pop()
        yield value
        if isinstance(value, BaseModel):
            stack.extend(getattr(value, name) for name in type(value).model_fields)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _normal(ref: str) -> str:
    return Path(ref).as_posix().removeprefix("./")


class MediaLibrary:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._names: dict[str, str] = {}  # a path as flows write it (and resolved) → name

    def add(self, source: Path, *aliases: str) -> str | None:
        """Copy `source` in under its content hash; returns the name (None if unreadable)."""
        try:
            data = source.read_bytes()
        except OSError as error:
            log.warning("media %s not readable: %s", source, error)
            return None
        ext = source.suffix.lower().lstrip(".") or "bin"
        name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        target = self.root / name
        if not target.exists():
            tmp = self.root / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)
        self._names[str(source.resolve())] = name
        for alias in aliases:
            self._names[alias] = name
        return name

    def add_bundle(self, base_dir: Path, references: list[str]) -> int:
        """Index every media path a bundle references (relative to its folder). Later calls win,
        so the current version's file answers for a path two versions share."""
        count = 0
        for ref in references:
            if is_url(ref):
                continue
            path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
            if self.add(path, ref, _normal(ref)) is not None:
                count += 1
        return count

    def name_of(self, image: str) -> str | None:
        found = self._names.get(image) or self._names.get(_normal(image))
        if found is None and Path(image).is_absolute():
            found = self._names.get(str(Path(image).resolve()))
        return found

    def url(self, image: str) -> str:
        """Where an outbound image is served: `/media/<name>` (a URL stays what it is)."""
        if is_url(image) or image.startswith(MEDIA_PREFIX):
            return image
        name = self.name_of(image)
        if name is None:
            log.warning("image %r is not among the flows' media; passed on as it is", image)
            return image
        return MEDIA_PREFIX + name

    def path(self, name: str) -> Path | None:
        """The file behind `/media/<name>`, if it is one of ours."""
        if not MEDIA_NAME.fullmatch(name):
            return None
        path = self.root / name
        return path if path.is_file() else None


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")


class BundleArchive(Mapping[tuple[str, str], Any]):
    """Every flow version kept: `(flow id, flow version) → compiled flow`, the engine's archive.

    `keep` copies a bundle's sources into `<root>/<bundle hash>/` with a manifest naming the
    version of each of its flows. Looking up a version that is not cached finds the bundle that
    had it (manifests are indexed on first need) and compiles that bundle again with
    `compile_dir` (load → check → compile, passed by the runtime, so this module knows nothing
    of the engine); a bundle that no longer passes check answers nothing, and the engine restarts
    those sessions with a notice."""

    def __init__(
        self,
        root: Path,
        compile_dir: Callable[[Path], Any] | None = None,
        *,
        cache_size: int = 8,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.compile_dir = compile_dir
        self.cache_size = cache_size
        self._bundles: OrderedDict[str, Any] = OrderedDict()  # bundle hash → compiled bundle
        self._index: dict[tuple[str, str], str] | None = None  # (flow, version) → bundle hash
        self._failed: set[str] = set()

    # -- keeping -----------------------------------------------------------------------------

    def keep(
        self,
        content_hash: str,
        files: Sequence[Path],
        base_dir: Path,
        media: Sequence[str] = (),
        flow_versions: Mapping[str, str] | None = None,
    ) -> Path | None:
        """Copy a bundle's files (main file first) and media into `<root>/<hash>/`, keeping their
        paths relative to `base_dir`. Idempotent; None if it cannot be archived (a file outside
        its folder, a full disk): the bundle still runs, only its sessions would restart after
        the next change."""
        versions = dict(flow_versions or {})
        if self._index is not None:
            for flow_id, version in versions.items():
                self._index[(flow_id, version)] = content_hash
        if not _HASH.fullmatch(content_hash) or not files:
            return None
        target = self.root / content_hash
        if (target / _MANIFEST).is_file():
            return target
        entries: list[tuple[Path, str]] = []
        for path in (*files, *(base_dir / m for m in media if not is_url(m))):
            try:
                rel = path.resolve().relative_to(base_dir).as_posix()
            except ValueError:
                log.warning("flow version %s: %s is outside %s; not archived", content_hash[:12],
                            path, base_dir)
                return None
            entries.append((path, rel))
        tmp = self.root / f".{content_hash}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for source, rel in entries:
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            manifest = {"hash": content_hash, "main": entries[0][1], "flows": versions}
            (tmp / _MANIFEST).write_bytes(orjson.dumps(manifest))
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / _MANIFEST).is_file():  # not a concurrent twin: a real error
                    raise
        except OSError as error:
            log.warning("flow version %s not archived: %s", content_hash[:12], error)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def remember(self, content_hash: str, compiled: Any) -> None:
        """Cache an already compiled bundle (the current one, at start-up)."""
        self._bundles[content_hash] = compiled
        self._bundles.move_to_end(content_hash)
        while len(self._bundles) > self.cache_size:
            self._bundles.popitem(last=False)
        flows = getattr(compiled, "flows", {})
        index = self._load_index()
        for flow in flows.values():
            index[(flow.id, flow.version)] = content_hash

    # -- the Mapping the engine reads ------------------------------------------------------------

    def __getitem__(self, key: tuple[str, str]) -> Any:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        bundle_hash = self._load_index().get(key)
        if bundle_hash is None:
            return default
        compiled = self._bundle(bundle_hash)
        flow = getattr(compiled, "flows", {}).get(key[0]) if compiled is not None else None
        if flow is None or flow.version != key[1]:
            return default
        return flow

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._load_index()))

    def __len__(self) -> int:
        return len(self._load_index())

    # -- internals -------------------------------------------------------------------------------

    def _load_index(self) -> dict[tuple[str, str], str]:
        if self._index is None:
            index: dict[tuple[str, str], str] = {}
            for manifest in sorted(self.root.glob(f"*/{_MANIFEST}"), key=_mtime):
                data = _read_manifest(manifest)
                bundle_hash = manifest.parent.name
                for flow_id, version in (data.get("flows") or {}).items():
                    index[(str(flow_id), str(version))] = bundle_hash
            self._index = index
        return self._index

    def main_file(self, content_hash: str) -> Path | None:
        folder = self.root / content_hash
        data = _read_manifest(folder / _MANIFEST) if _HASH.fullmatch(content_hash) else {}
        main = data.get("main")
        return folder / str(main) if main else None

    def _bundle(self, content_hash: str) -> Any:
        found = self._bundles.get(content_hash)
        if found is not None:
            self._bundles.move_to_end(content_hash)
            return found
        if content_hash in self._failed or self.compile_dir is None:
            return None
        main = self.main_file(content_hash)
        compiled = self.compile_dir(main) if main is not None else None
        if compiled is None:
            self._failed.add(content_hash)
            log.warning("flow version %s is not available; its sessions restart", content_hash[:12])
            return None
        self.remember(content_hash, compiled)
        return compiled


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


_HASH = re.compile(r"[0-9a-f]{64}")
_MANIFEST = "loa-bundle.json"
