"""Trying a changed flows file before it replaces the real one.

An organiser uploads a new flows.yaml (or one of the files it includes, or a units CSV from
`loa units import`). Nothing on disk may change unless the whole deployment still passes
`loa check` with it. `check_with(main, overrides)` copies every file the bundle reads into a
temporary folder, puts the new bytes in place of the old ones there, and checks that copy;
`write_files` then replaces the real files, each atomically.

Which files a bundle reads is found by walking the YAML itself (`bundle_sources`): `include:`
globs, `units:` CSV files and `image:`/`file:` media, each relative to the file that names it,
with the overrides' content rather than the disk's. Only files inside the main file's folder are
ever copied (a path leading elsewhere is left for check to report as missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from flows.check import format_problem, load_checked
from flows.loader import Loaded
from flows.problems import Problem

MAX_SOURCES = 2000  # files a bundle may read (the loader's own limit is 500 YAML files)
MEDIA_KEYS = ("image", "file")


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://")) or "://" in value[:12]


def _inside(path: Path, base: Path) -> bool:
    try:
        path.relative_to(base)
    except ValueError:
        return False
    return True


def _yaml_data(raw: bytes) -> Any:
    try:
        return yaml.safe_load(raw.decode("utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return None  # check reports it with its position


def _references(data: Any) -> tuple[list[str], list[str]]:
    """(include patterns, other paths) written in one YAML document. Aliases may make the
    document a graph: every node is visited once."""
    includes: list[str] = []
    paths: list[str] = []
    if isinstance(data, dict):
        include = data.get("include")
        if isinstance(include, str):
            includes.append(include)
        elif isinstance(include, list):
            includes.extend(i for i in include if isinstance(i, str))
    seen: set[int] = set()
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("units", *MEDIA_KEYS) and isinstance(value, str) and value.strip():
                    paths.append(value.strip())
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return includes, paths


def bundle_sources(main: Path, overrides: Mapping[Path, bytes] | None = None) -> list[Path]:
    """Every existing file (resolved) a bundle rooted at `main` may read, main file first;
    YAML files are read from `overrides` when given there (keys: resolved paths)."""
    changed = {Path(p).resolve(): data for p, data in (overrides or {}).items()}
    main = main.resolve()
    base = main.parent
    found: list[Path] = []
    seen: set[Path] = set()
    queue = [main]

    def add(path: Path) -> None:
        if path in seen or not _inside(path, base) or len(seen) >= MAX_SOURCES:
            return
        seen.add(path)
        if path in changed or path.is_file():
            found.append(path)
            if path.suffix.lower() in (".yaml", ".yml"):
                queue.append(path)

    seen.add(main)
    found.append(main)
    while queue:
        current = queue.pop(0)
        raw = changed.get(current)
        if raw is None:
            try:
                raw = current.read_bytes()
            except OSError:
                continue
        includes, paths = _references(_yaml_data(raw))
        folder = current.parent
        for pattern in includes:
            if os.path.isabs(pattern):
                continue
            if any(c in pattern for c in "*?["):
                for match in sorted(folder.glob(pattern)):
                    add(match.resolve())
                # A new file the override set adds is matched too (it is not on disk yet).
                for path in changed:
                    if path.parent == (folder / pattern).parent.resolve() and path.match(pattern):
                        add(path)
            else:
                add((folder / pattern).resolve())
        for ref in paths:
            if not _is_url(ref) and not os.path.isabs(ref):
                add((folder / ref).resolve())
    return found


@dataclass(frozen=True, slots=True)
class Trial:
    """What `loa check` says about the bundle with the overrides in place."""

    loaded: Loaded
    problems: tuple[Problem, ...]  # file names as in the real folder (relative to it)

    @property
    def ok(self) -> bool:
        return self.loaded.bundle is not None and not self.errors

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.is_error)

    def lines(self, *, warnings: bool = True) -> list[str]:
        """`file:line:column: message` (+ hint) of every error, then the warnings."""
        shown = [*self.errors, *(self.warnings if warnings else ())]
        return [format_problem(p) for p in shown]


def _relative(problem: Problem, folder: str) -> Problem:
    name = problem.file
    prefix = folder.rstrip(os.sep) + os.sep
    if name.startswith(prefix):
        return replace(problem, file=name[len(prefix):])
    return problem


def check_with(
    main: Path,
    overrides: Mapping[Path, bytes] | None = None,
    validate: Callable[[Path], list[str]] | None = None,
) -> Trial:
    """Check the bundle rooted at `main` as it would be with `overrides` (resolved path inside
    the bundle's folder → new bytes) written, without touching the real files. `validate`
    (the server's own refusals, e.g. channel secrets) runs on the copy once check passes; its
    lines become errors of the trial."""
    main = main.resolve()
    base = main.parent
    changed = {Path(p).resolve(): data for p, data in (overrides or {}).items()}
    for path in changed:
        if not _inside(path, base):
            raise ValueError(f"{path} is outside {base}")
    sources = bundle_sources(main, changed)
    with tempfile.TemporaryDirectory(prefix="loa-check-") as tmp:
        root = Path(tmp)
        for source in sources:
            target = root / source.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = changed.get(source)
            if data is not None:
                target.write_bytes(data)
            else:
                try:
                    shutil.copyfile(source, target)
                except OSError:
                    continue  # vanished meanwhile: check reports it missing
        for path, data in changed.items():  # overrides nothing referenced (yet) still exist
            target = root / path.relative_to(base)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        loaded = load_checked(root / main.name)
        problems = tuple(_relative(p, str(root)) for p in loaded.problems)
        if validate is not None and loaded.bundle is not None and not loaded.errors:
            prefix = str(root).rstrip(os.sep) + os.sep
            for line in validate(root / main.name):
                text = line.replace(prefix, "").removeprefix(f"{main.name}: ")
                problems += (Problem(main.name, 1, 1, text),)
    return Trial(loaded, problems)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.chmod(tmp, path.stat().st_mode & 0o777)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_files(files: Mapping[Path, bytes]) -> None:
    for path, data in files.items():
        write_atomically(Path(path), data)


def yaml_files(main: Path) -> list[Path]:
    """The YAML files of the bundle rooted at `main` (main first), as on disk."""
    return [p for p in bundle_sources(main) if p.suffix.lower() in (".yaml", ".yml")]


def relative_names(paths: Iterable[Path], base: Path) -> list[str]:
    base = base.resolve()
    return [p.resolve().relative_to(base).as_posix() for p in paths]


__all__ = [
    "MAX_SOURCES",
    "Trial",
    "bundle_sources",
    "check_with",
    "relative_names",
    "write_atomically",
    "write_files",
    "yaml_files",
]
