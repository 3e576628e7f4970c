"""Read flows.yaml (with its includes and unit CSV files) into a validated `Bundle`, keeping the
file, line and column of every node so that every problem points at what the organiser wrote.

This is the one place in `flows/` that reads files (with `yaml_reader` and `units_csv`).
`include:` lists other YAML files (relative paths or globs) whose organisations, campaigns and
flows are merged in; each file is read once. A name declared in two files is an error pointing
at both; an organisation written in several files has its `children` merged.

In the returned bundle, `image` paths are relative to `base_dir` (the main file's folder): the
loader rewrites those written in included files, which are relative to their own file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.problems import NodePath, Pos, Positions, Problem, Severity
from flows.schema import Bundle
from flows.schema_errors import schema_problems
from flows.suggest import closest, did_you_mean, fold, slugify
from flows.units_csv import load_units
from flows.yaml_reader import MAX_FILE_BYTES, YamlFile, display, parse_file

MAX_FILES = 500


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class Loaded:
    """What `load` found. `bundle` is None when a file could not be read or did not match
    the language; `problems` then says why (warnings may be present either way)."""

    bundle: Bundle | None
    problems: tuple[Problem, ...]
    positions: Positions
    files: tuple[Path, ...]  # every file read (YAML and CSV), resolved, in read order
    base_dir: Path  # the main file's folder, resolved; bundle paths are relative to it
    content_hash: str  # sha256 over every file's relative name and bytes
    main_file: str = ""  # the main file's name as displayed in problems
    # The bundle as validated by the schema even when other errors (a bad CSV row, a key
    # declared twice across files, a cross-reference) keep `bundle` None: for checks and tools.
    parsed: Bundle | None = None

    @property
    def file_order(self) -> list[str]:
        return [self.main_file, *(p.file for p in self.problems)]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def ok(self) -> bool:
        return self.bundle is not None and not self.errors


# --------------------------------------------------------------------------- includes & merge

_SECTIONS = ("organisations", "campaigns", "flows")
_SECTION_NAMES = {"organisations": "đơn vị", "campaigns": "chiến dịch", "flows": "kịch bản"}
_URL = re.compile(r"^[a-z]+://", re.IGNORECASE)


def _rebase_images(file: YamlFile, rel_dir: str) -> None:
    """Make image paths of an included file relative to the main file's folder."""
    flows = file.data.get("flows")
    if not rel_dir or not isinstance(flows, dict):
        return
    for flow in flows.values():
        steps = flow.get("steps") if isinstance(flow, dict) else None
        for step in steps if isinstance(steps, list) else ():
            image = step.get("image") if isinstance(step, dict) else None
            if isinstance(image, str) and image and not _URL.match(image) \
                    and not os.path.isabs(image):
                step["image"] = os.path.normpath(os.path.join(rel_dir, image)).replace(
                    os.sep, "/")


def _expand_units(
    file: YamlFile, problems: list[Problem], raws: list[tuple[Path, str, bytes]]
) -> None:
    orgs = file.data.get("organisations")
    if not isinstance(orgs, dict):
        return

    def walk(nodes: dict[str, Any], path: NodePath) -> None:
        for slug, node in nodes.items():
            if not isinstance(node, dict):
                continue
            node_path = (*path, slug)
            units = node.get("units")
            if isinstance(units, str) and units:
                csv_path = file.path.parent / units
                shown = display(Path(file.shown).parent / units)
                loaded = load_units(csv_path.resolve(), shown, node_path, file.positions,
                                     problems, raws)
                if loaded is not None:
                    children = node.setdefault("children", {})
                    if isinstance(children, dict):
                        for unit_slug, unit in loaded.items():
                            if unit_slug in children:
                                pos = file.positions.key((*node_path, "children", unit_slug))
                                problems.append(Problem(
                                    pos.file, pos.line, pos.column,
                                    f"đơn vị '{unit_slug}' có cả trong tệp CSV và trong children",
                                    "khai báo mỗi đơn vị ở một nơi"))
                                continue
                            children[unit_slug] = unit
            children = node.get("children")
            if isinstance(children, dict):
                walk(children, (*node_path, "children"))

    walk(orgs, ("organisations",))


def _merge_org(
    into: dict[str, Any], extra: dict[str, Any], path: NodePath,
    positions: Positions, other: YamlFile, problems: list[Problem]
) -> None:
    """Merge an org node written again in an included file: children are merged, any other
    key may be written in one file only."""
    for key, value in extra.items():
        kpath = (*path, key)
        if key == "children" and isinstance(value, dict) and isinstance(into.get(key), dict):
            for slug, child in value.items():
                cpath = (*kpath, slug)
                existing = into[key].get(slug)
                if isinstance(existing, dict) and isinstance(child, dict):
                    _merge_org(existing, child, cpath, positions, other, problems)
                elif slug in into[key]:
                    _duplicate(cpath, positions, other, "đơn vị", problems)
                else:
                    into[key][slug] = child
                    positions.adopt(other.positions, cpath)
            continue
        if key in into:
            _duplicate(kpath, positions, other, "khóa", problems)
            continue
        into[key] = value
        positions.adopt(other.positions, kpath)


def _duplicate(path: NodePath, positions: Positions, other: YamlFile, what: str,
               problems: list[Problem]) -> None:
    first = positions.key(path)
    second = other.positions.key(path)
    problems.append(Problem(
        second.file, second.line, second.column,
        f"{what} '{path[-1]}' đã được khai báo ở {first.file}:{first.line}:{first.column}",
        "mỗi tên chỉ khai báo ở một tệp: đổi tên hoặc xóa một trong hai"))


def _include_targets(
    file: YamlFile, problems: list[Problem]
) -> list[tuple[Path, str, NodePath]]:
    """(resolved path, displayed name, where it was written) of each file `file` includes."""
    include = file.data.get("include")
    if include is None:
        return []
    if isinstance(include, str):
        include = [include]
        file.data["include"] = include
    if not isinstance(include, list):
        pos = file.positions.at(("include",))
        problems.append(Problem(pos.file, pos.line, pos.column,
                                "include cần một danh sách tệp",
                                "VD: include: [quan-tan-phu.yaml, chung.yaml]"))
        return []
    out: list[tuple[Path, str, NodePath]] = []
    for index, item in enumerate(include):
        where = ("include", index)
        pos = file.positions.at(where)
        if not isinstance(item, str) or not item.strip():
            problems.append(Problem(pos.file, pos.line, pos.column,
                                    "mỗi mục của include là đường dẫn một tệp",
                                    "VD: - quan-tan-phu.yaml"))
            continue
        if os.path.isabs(item):
            problems.append(Problem(pos.file, pos.line, pos.column,
                                    f"'{item}' là đường dẫn tuyệt đối",
                                    "viết đường dẫn tính từ thư mục chứa tệp này"))
            continue
        if any(c in item for c in "*?["):
            matches = sorted(file.path.parent.glob(item))
            if not matches:
                problems.append(Problem(pos.file, pos.line, pos.column,
                                        f"không có tệp nào khớp '{item}'",
                                        "kiểm tra tên thư mục và đuôi tệp", Severity.WARNING))
            for match in matches:
                rel = os.path.relpath(match, file.path.parent)
                out.append((match.resolve(), display(Path(file.shown).parent / rel), where))
            continue
        target = (file.path.parent / item).resolve()
        shown = display(Path(file.shown).parent / item)
        if not target.exists():
            problems.append(Problem(pos.file, pos.line, pos.column,
                                    f"không tìm thấy tệp '{item}' để include",
                                    f"đường dẫn tính từ thư mục chứa {file.shown}; kiểm tra tên "
                                    "tệp"))
            continue
        out.append((target, shown, where))
    return out


def _merge(main: YamlFile, others: list[YamlFile], problems: list[Problem]) -> tuple[dict[str, Any],
                                                                               Positions]:
    data = dict(main.data)
    positions = Positions(Pos(main.shown, 1, 1))
    positions.adopt(main.positions, ())
    for section in _SECTIONS:
        if isinstance(data.get(section), dict):
            data[section] = dict(data[section])
    for other in others:
        for key, value in other.data.items():
            if key == "include":
                continue
            if key not in _SECTIONS:
                pos = other.positions.key((key,))
                hint = (f"'{key}' chỉ khai báo trong tệp chính {main.shown}"
                        if key in Bundle.model_fields else
                        f"tệp được include chỉ chứa organisations, campaigns, flows"
                        f"{'; ' + did_you_mean(key, _SECTIONS) if closest(key, _SECTIONS) else ''}")
                problems.append(Problem(pos.file, pos.line, pos.column,
                                        f"khóa '{key}' không dùng được trong tệp được include",
                                        hint))
                continue
            if not isinstance(value, dict):
                pos = other.positions.at((key,))
                problems.append(Problem(pos.file, pos.line, pos.column,
                                        f"'{key}' cần các mục con dạng 'tên: ...'",
                                        "mỗi mục con thụt vào 2 dấu cách"))
                continue
            target = data.setdefault(key, {})
            if not isinstance(target, dict):
                continue
            if (key,) not in positions:
                positions.adopt(other.positions, (key,), below=False)
            for name, item in value.items():
                path = (key, name)
                if name in target:
                    if key == "organisations" and isinstance(target[name], dict) \
                            and isinstance(item, dict):
                        target[name] = dict(target[name])
                        _merge_org(target[name], item, path, positions, other, problems)
                    else:
                        _duplicate(path, positions, other, _SECTION_NAMES[key], problems)
                    continue
                target[name] = item
                positions.adopt(other.positions, path)
    return data, positions


# --------------------------------------------------------------------------- load


def _hash(files: list[tuple[Path, str, bytes]], base_dir: Path) -> str:
    digest = hashlib.sha256()
    for path, _, raw in files:
        try:
            name = path.relative_to(base_dir).as_posix()
        except ValueError:
            name = path.as_posix()
        digest.update(name.encode() + b"\0" + hashlib.sha256(raw).digest())
    return digest.hexdigest()


def sort_problems(problems: Iterable[Problem], file_order: Iterable[str] = ()) -> list[Problem]:
    order = {name: n for n, name in enumerate(file_order)}
    return sorted(problems, key=lambda p: (order.get(p.file, len(order)), p.file, p.line,
                                           p.column))


def load(path: Path | str) -> Loaded:
    """Read the main flows file, its includes and unit CSV files, and validate them."""
    main_path = Path(path)
    shown = display(main_path)
    base_dir = main_path.resolve().parent
    problems: list[Problem] = []
    raws: list[tuple[Path, str, bytes]] = []
    main = parse_file(main_path.resolve(), shown, problems)
    if main is None:
        return Loaded(None, tuple(problems), Positions(Pos(shown, 1, 1)), (), base_dir,
                      _hash(raws, base_dir), shown)
    raws.append((main.path, main.shown, main.raw))
    _expand_units(main, problems, raws)
    others: list[YamlFile] = []
    seen = {main.path}
    queue = [main]
    while queue:
        current = queue.pop(0)
        for target, target_shown, _where in _include_targets(current, problems):
            if target in seen:
                continue  # each file is read once (a shared file may be included twice)
            seen.add(target)
            if len(seen) > MAX_FILES:
                problems.append(Problem(target_shown, 1, 1, "quá nhiều tệp được include",
                                        f"tối đa {MAX_FILES} tệp"))
                break
            included = parse_file(target, target_shown, problems)
            if included is None:
                continue
            raws.append((included.path, included.shown, included.raw))
            rel_dir = os.path.relpath(included.path.parent, base_dir)
            _rebase_images(included, "" if rel_dir == "." else rel_dir)
            _expand_units(included, problems, raws)
            others.append(included)
            queue.append(included)
    data, positions = _merge(main, others, problems)
    files = tuple(p for p, _, _ in raws)
    content_hash = _hash(raws, base_dir)
    bundle: Bundle | None = None
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as error:
        problems.extend(schema_problems(data, error, positions))
    parsed = bundle
    if any(p.is_error for p in problems):
        bundle = None
    order = [name for _, name, _ in raws]
    return Loaded(bundle, tuple(sort_problems(problems, order)), positions, files, base_dir,
                  content_hash, shown, parsed)


def with_problems(loaded: Loaded, extra: Iterable[Problem]) -> Loaded:
    """`loaded` with more problems; the bundle is dropped if any of them is an error."""
    problems = sort_problems([*loaded.problems, *extra], loaded.file_order)
    bundle = loaded.bundle if not any(p.is_error for p in problems) else None
    return replace(loaded, bundle=bundle, problems=tuple(problems))


__all__ = [  # Problem, Positions and the name helpers are re-exported for convenience
    "MAX_FILE_BYTES",
    "Loaded",
    "NodePath",
    "Pos",
    "Positions",
    "Problem",
    "Severity",
    "closest",
    "did_you_mean",
    "fold",
    "load",
    "slugify",
    "sort_problems",
    "with_problems",
]
