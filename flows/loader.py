"""Read flows.yaml (with its includes and unit CSV files) into a validated `Bundle`, keeping the
file, line and column of every node so that every problem points at what the organiser wrote.

This is the one module of `flows/` that reads files. It never executes anything from YAML:
only standard tags are accepted, anchors and aliases are refused (no alias bombs), duplicate
keys are errors. Scalars follow YAML 1.2 core rules where YAML 1.1 surprises people: only
`true`/`false` are booleans (`yes`, `no`, `on`, `off` stay text), only plain decimal numbers
are numbers (`0912345678`, `012`, `8:30` stay text). Mapping keys are always text. All text is
NFC-normalised.

In the returned bundle, `image` paths are relative to `base_dir` (the main file's folder): the
loader rewrites those written in included files, which are relative to their own file.
"""

from __future__ import annotations

import csv
import difflib
import enum
import hashlib
import io
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from flows import schema
from flows.schema import Bundle, step_kind

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_FILES = 500
MAX_DEPTH = 64

PathPart = str | int
NodePath = tuple[PathPart, ...]


# --------------------------------------------------------------------------- problems


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration, where it is, and how to fix it (Vietnamese)."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    message: str
    hint: str = ""
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        prefix = "" if self.is_error else "cảnh báo: "
        return f"{self.file}:{self.line}:{self.column}: {prefix}{self.message}"


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True, slots=True)
class Pos:
    file: str
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True, slots=True)
class _Span:
    pos: Pos
    start: int  # character offsets into the file's text
    end: int


class Positions:
    """Where each node of the merged document was written.

    Paths are tuples of mapping keys and list indexes as written in YAML, e.g.
    `("flows", "dang_ky", "steps", 2, "expect")`. Every look-up falls back to the nearest
    known ancestor, so a path always has a position.
    """

    def __init__(self, default: Pos) -> None:
        self._default = default
        self._nodes: dict[NodePath, _Span] = {}
        self._keys: dict[NodePath, _Span] = {}
        self._collections: set[NodePath] = set()
        self._texts: dict[str, str] = {}

    # -- building (loader only)
    def _add_text(self, file: str, text: str) -> None:
        self._texts[file] = text

    def _set(self, path: NodePath, node: _Span, key: _Span | None, collection: bool) -> None:
        self._nodes[path] = node
        if key is not None:
            self._keys[path] = key
        if collection:
            self._collections.add(path)
        else:
            self._collections.discard(path)

    def _adopt(self, other: Positions, prefix: NodePath) -> None:
        """Take `other`'s positions of `prefix` and everything under it."""
        n = len(prefix)
        for path, span in other._nodes.items():
            if path[:n] == prefix:
                self._nodes[path] = span
                if path in other._collections:
                    self._collections.add(path)
        for path, span in other._keys.items():
            if path[:n] == prefix:
                self._keys[path] = span
        self._texts.update(other._texts)

    # -- reading
    def _nearest(self, table: dict[NodePath, _Span], path: NodePath) -> _Span | None:
        for n in range(len(path), -1, -1):
            span = table.get(path[:n])
            if span is not None:
                return span
        return None

    def at(self, path: NodePath) -> Pos:
        """The best place to point at for the node at `path`: the value of a scalar entry,
        the key of an entry whose value is a list or mapping."""
        for n in range(len(path), -1, -1):
            sub = path[:n]
            if sub in self._collections and sub in self._keys:
                return self._keys[sub].pos
            if sub in self._nodes:
                return self._nodes[sub].pos
        return self._default

    def key(self, path: NodePath) -> Pos:
        """The key of the mapping entry at `path` (for a list item: the item)."""
        span = self._keys.get(path)
        return span.pos if span else self.at(path)

    def value(self, path: NodePath) -> Pos:
        span = self._nearest(self._nodes, path)
        return span.pos if span else self._default

    def file_of(self, path: NodePath) -> str:
        return self.at(path).file

    def find(self, path: NodePath, needle: str) -> Pos:
        """Where `needle` occurs in the source of the scalar at `path` (e.g. a placeholder)."""
        span = self._nodes.get(path)
        if span is None:
            return self.at(path)
        text = self._texts.get(span.pos.file)
        if text is None:
            return span.pos
        index = text.find(needle, span.start, max(span.end, span.start + len(needle)))
        if index < 0:
            return span.pos
        line = text.count("\n", 0, index) + 1
        column = index - (text.rfind("\n", 0, index) + 1) + 1
        return Pos(span.pos.file, line, column)

    def __contains__(self, path: object) -> bool:
        return path in self._nodes

    def __getitem__(self, path: NodePath) -> Pos:
        return self.at(path)


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


class _Stop(Exception):
    """A file-level problem after which the file cannot be read further."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


# --------------------------------------------------------------------------- YAML reading

_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {
    _TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq")
}
_TEXT_TAGS = {_TAG + "merge", _TAG + "value"}  # YAML 1.1 oddities ("<<", "="): plain text here


class _Resolver(Resolver):
    pass


_Resolver.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in {_TAG + "bool", _TAG + "int",
                                                              _TAG + "float"}]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Resolver.add_implicit_resolver(
    _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Resolver.add_implicit_resolver(
    _TAG + "int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_Resolver.add_implicit_resolver(
    _TAG + "float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark, message: str, hint: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.hint = hint


class _Composer(Reader, Scanner, Parser, Composer, _Resolver):
    """PyYAML's pure-Python reader/scanner/parser/composer. No constructor: nodes are turned
    into values by `_Builder`, which knows only standard scalar types."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                event.start_mark,
                "không dùng neo (&) và bí danh (*) của YAML",
                "viết đầy đủ nội dung ở mỗi chỗ; phần dùng chung nên tách thành một kịch bản "
                "riêng rồi goto tới nó",
            )
        return super().compose_node(parent, index)


_SCALARS = SafeConstructor()


def _display_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _pos(file: str, mark: yaml.Mark) -> Pos:
    return Pos(file, mark.line + 1, mark.column + 1)


def _span(file: str, node: Node) -> _Span:
    return _Span(_pos(file, node.start_mark), node.start_mark.index, node.end_mark.index)


class _Builder:
    """Turns a composed node tree into plain Python values, recording positions."""

    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.problems: list[Problem] = []

    def _problem(self, mark: yaml.Mark, message: str, hint: str) -> None:
        pos = _pos(self.file, mark)
        self.problems.append(Problem(self.file, pos.line, pos.column, message, hint))

    def build(
        self, node: Node, path: NodePath, key: _Span | None = None, depth: int = 0
    ) -> Any:
        if depth > MAX_DEPTH:
            raise _Refused(node.start_mark, "cấu trúc lồng nhau quá sâu",
                           "tệp kịch bản không cần lồng quá vài chục cấp")
        collection = isinstance(node, MappingNode | SequenceNode)
        self.positions._set(path, _span(self.file, node), key, collection)
        if node.tag not in _ALLOWED_TAGS and node.tag not in _TEXT_TAGS:
            self._problem(
                node.start_mark,
                f"thẻ YAML '{_display_tag(node.tag)}' không được phép",
                "bỏ thẻ bắt đầu bằng '!': tệp kịch bản chỉ chứa văn bản, số, ngày, danh sách "
                "và các khóa",
            )
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if isinstance(node, SequenceNode):
            return [
                self.build(child, (*path, i), None, depth + 1)
                for i, child in enumerate(node.value)
            ]
        assert isinstance(node, MappingNode)
        result: dict[str, Any] = {}
        first_seen: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._problem(key_node.start_mark, "khóa phải là một chữ hoặc từ",
                              "viết dạng 'khóa: giá trị'")
                continue
            name = unicodedata.normalize("NFC", str(key_node.value))
            if name in first_seen:
                self._problem(
                    key_node.start_mark,
                    f"khóa '{name}' bị lặp lại (đã có ở dòng {first_seen[name].line + 1})",
                    "mỗi khóa chỉ được viết một lần trong cùng một khối: xóa hoặc đổi tên "
                    "một trong hai",
                )
                continue
            first_seen[name] = key_node.start_mark
            result[name] = self.build(
                value_node, (*path, name), _span(self.file, key_node), depth + 1
            )
        return result

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag == _TAG + "str" or node.tag in _TEXT_TAGS:
            return unicodedata.normalize("NFC", str(node.value))
        try:
            return _SCALARS.yaml_constructors[node.tag](_SCALARS, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            if node.tag == _TAG + "timestamp":
                self._problem(node.start_mark, f"ngày '{node.value}' không tồn tại",
                              "viết năm-tháng-ngày, VD: 2023-08-07")
            else:
                self._problem(node.start_mark, f"giá trị '{node.value}' không hợp lệ",
                              "đặt giá trị trong ngoặc kép nếu đây là văn bản")
            return None


# PyYAML's problem text -> (message, hint). Checked in order, by substring.
_YAML_MESSAGES: tuple[tuple[str, str, str], ...] = (
    ("mapping values are not allowed",
     "dấu ':' không được phép ở đây",
     "nếu câu có dấu ':' (VD: 'VD: ...'), đặt cả câu trong ngoặc kép; nếu không, kiểm tra "
     "thụt lề"),
    ("expected <block end>",
     "thụt lề không khớp với các dòng phía trên",
     "các khóa cùng cấp phải thẳng cột với nhau; mỗi cấp thụt thêm 2 dấu cách"),
    ("did not find expected key",
     "thụt lề không khớp hoặc thiếu dấu ':'",
     "các khóa cùng cấp phải thẳng cột với nhau; câu có dấu ngoặc kép ở giữa nên đặt trong "
     "ngoặc đơn '...'"),
    ("did not find expected '-' indicator",
     "thụt lề của danh sách không khớp",
     "các mục của cùng một danh sách bắt đầu bằng '- ' và thẳng cột với nhau"),
    ("could not find expected ':'",
     "thiếu dấu ':' sau khóa",
     "viết 'khóa: giá trị'; nếu dòng này là phần tiếp của câu phía trên, đặt cả câu trong "
     "ngoặc kép; kiểm tra cả dấu ngoặc kép chưa đóng ở các dòng trên"),
    ("found unknown escape character",
     "ký tự '\\' không hợp lệ trong ngoặc kép",
     "dùng ngoặc đơn '...' bao ngoài câu, hoặc viết '\\\\'"),
    ("expected ',' or ']'",
     "danh sách trong [ ] chưa đóng hoặc thiếu dấu phẩy",
     "văn bản có dấu phẩy, ':' hoặc '?' nằm trong [ ] cần đặt trong ngoặc kép"),
    ("expected ',' or '}'",
     "nhóm khóa trong { } chưa đóng hoặc thiếu dấu phẩy",
     "văn bản có dấu phẩy, ':' hoặc '?' nằm trong { } cần đặt trong ngoặc kép"),
    ("did not find expected node content",
     "thiếu giá trị ở đây",
     "kiểm tra dấu '-', ',' hoặc ':' thừa"),
    ("expected a single document",
     "tệp chỉ được chứa một tài liệu YAML (có dấu '---' thứ hai)",
     "xóa dòng '---', hoặc tách phần sau sang tệp khác rồi dùng include"),
    ("that cannot start any token",
     "ký tự này không được đứng đầu một giá trị",
     "đặt giá trị trong ngoặc kép"),
)

# `say: {ho_ten} ơi` — a flow collection followed by more text on the same line.
_FLOW_TEXT = re.compile(r"(?:^|:\s|-\s)\s*[{\[][^}\]]*[}\]][ \t]*[^\s#,}\]]")
_TAB_HINT = "dùng dấu cách, không dùng Tab (mỗi cấp thụt thêm 2 dấu cách)"


def _tab_lines(text: str) -> Iterator[tuple[int, int]]:
    """(line, column) of every tab in a line's indentation, 1-based."""
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            yield number, indent.index("\t") + 1


def _yaml_problem(file: str, text: str, error: yaml.YAMLError) -> Problem:
    if isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        return Problem(file, line, column, "tệp chứa ký tự điều khiển không hợp lệ",
                       "xóa ký tự lạ (thường do sao chép từ Word hoặc PDF)")
    assert isinstance(error, yaml.MarkedYAMLError)
    problem = error.problem or ""
    context = error.context or ""
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    # A tab in the indentation at or above the failing line is the likely cause.
    for tab_line, tab_column in _tab_lines(text):
        if tab_line <= line or "\\t" in problem:
            return Problem(file, tab_line, tab_column, "thụt lề bằng ký tự Tab", _TAB_HINT)
        break
    if "quoted scalar" in context and "end of stream" in problem and error.context_mark:
        cm = error.context_mark
        return Problem(file, cm.line + 1, cm.column + 1,
                       "dấu ngoặc kép mở ở đây chưa được đóng",
                       "thêm dấu ngoặc đóng ở cuối câu; câu có dấu \" bên trong thì bao ngoài "
                       "bằng ngoặc đơn '...'")
    source_line = text.split("\n")[line - 1] if 0 < line <= text.count("\n") + 1 else ""
    flow_text = _FLOW_TEXT.search(source_line)
    if flow_text:
        brace = flow_text.start() + len(flow_text.group()) - len(flow_text.group().lstrip(":- \t"))
        return Problem(file, line, brace + 1,
                       "văn bản bắt đầu bằng '{' hoặc '[' bị hiểu nhầm là một nhóm khóa",
                       "đặt cả câu trong ngoặc kép, VD: say: \"{ho_ten} ơi, ...\"")
    if "unknown escape character" in problem and column > 1:
        column -= 1  # PyYAML marks the character after the backslash
    for needle, message, hint in _YAML_MESSAGES:
        if needle in problem or needle in context:
            return Problem(file, line, column, message, hint)
    return Problem(file, line, column, f"lỗi cú pháp YAML: {problem or context}",
                   "kiểm tra thụt lề (dấu cách) và dấu ngoặc ở dòng này hoặc dòng phía trên")


# --------------------------------------------------------------------------- files


def _display(path: Path) -> str:
    return os.path.normpath(str(path))


def _read_bytes(path: Path, shown: str) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _Stop(Problem(shown, 1, 1, f"không tìm thấy tệp '{shown}'",
                            "kiểm tra tên và đường dẫn tệp")) from None
    except OSError as exc:
        raise _Stop(Problem(shown, 1, 1, f"không đọc được tệp '{shown}': {exc.strerror}",
                            "kiểm tra quyền đọc tệp")) from None
    if not path.is_file():
        raise _Stop(Problem(shown, 1, 1, f"'{shown}' không phải là một tệp",
                            "chỉ đường dẫn tới một tệp .yaml"))
    if size > MAX_FILE_BYTES:
        raise _Stop(Problem(
            shown, 1, 1,
            f"tệp quá lớn ({size / 1024 / 1024:.1f} MB, "
            f"tối đa {MAX_FILE_BYTES // 1024 // 1024} MB)",
            "tách thành nhiều tệp nhỏ và dùng include"))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Stop(Problem(shown, 1, 1, f"không đọc được tệp '{shown}': {exc.strerror}",
                            "kiểm tra quyền đọc tệp")) from None


def _decode(data: bytes, shown: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16").encode()
    if b"\x00" in data:
        raise _Stop(Problem(shown, 1, 1, "tệp không phải văn bản (có vẻ là tệp nhị phân)",
                            "tệp kịch bản phải là văn bản lưu với bảng mã UTF-8"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _Stop(Problem(shown, line, column, "tệp không lưu bằng bảng mã UTF-8",
                            "mở tệp bằng trình soạn thảo và lưu lại với bảng mã UTF-8")) from None
    return text.replace("\r\n", "\n")


# --------------------------------------------------------------------------- diacritics


def fold(text: str) -> str:
    """Lower-case text without Vietnamese diacritics, single-spaced (for matching names)."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    bare = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return " ".join(bare.lower().split())


def slugify(text: str, sep: str = "_") -> str:
    """A suggestion for an id written with diacritics or spaces: 'Họ tên' -> 'ho_ten'."""
    return re.sub(r"[^a-z0-9]+", sep, fold(text)).strip(sep)[:64] or "ma"


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like `name` (compared without diacritics), if any is close."""
    options = {fold(c): c for c in candidates}
    found = difflib.get_close_matches(fold(name), list(options), n=1, cutoff=0.6)
    return options[found[0]] if found else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    match = closest(name, candidates)
    return f"có phải ý bạn là '{match}'?" if match else ""


# --------------------------------------------------------------------------- one file


@dataclass(slots=True)
class _File:
    path: Path  # resolved
    shown: str
    data: dict[str, Any]
    positions: Positions
    raw: bytes


def _parse(path: Path, shown: str, problems: list[Problem]) -> _File | None:
    try:
        raw = _read_bytes(path, shown)
        text = _decode(raw, shown)
    except _Stop as stop:
        problems.append(stop.problem)
        return None
    positions = Positions(Pos(shown, 1, 1))
    positions._add_text(shown, text)
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        problems.append(Problem(shown, 1, 1, "tệp trống",
                                "tệp cần ít nhất khóa 'flows:' với một kịch bản"))
        return None
    try:
        root = _Composer(text).get_single_node()
        if root is None:
            problems.append(Problem(shown, 1, 1, "tệp trống",
                                    "tệp cần ít nhất khóa 'flows:' với một kịch bản"))
            return None
        builder = _Builder(shown, positions)
        data = builder.build(root, ())
    except _Refused as refused:
        pos = _pos(shown, refused.mark)
        problems.append(Problem(shown, pos.line, pos.column, refused.message, refused.hint))
        return None
    except yaml.YAMLError as error:
        problems.append(_yaml_problem(shown, text, error))
        return None
    except RecursionError:
        problems.append(Problem(shown, 1, 1, "cấu trúc lồng nhau quá sâu",
                                "tệp kịch bản không cần lồng quá vài chục cấp"))
        return None
    problems.extend(builder.problems)
    if builder.problems:
        return None
    if not isinstance(data, dict):
        pos = positions.at(())
        problems.append(Problem(
            shown, pos.line, pos.column,
            "tệp cần gồm các khóa như organisations:, campaigns:, flows:",
            "mỗi khóa viết ở đầu dòng, không thụt lề, theo sau là dấu ':'"))
        return None
    return _File(path, shown, data, positions, raw)


# --------------------------------------------------------------------------- unit CSV

_CSV_COLUMNS = {
    "ma": "slug", "ma don vi": "slug", "ma dv": "slug", "slug": "slug",
    "ten don vi": "name", "ten": "name", "don vi": "name", "ten dv": "name",
    "khu vuc": "area", "cum": "area", "cum thi dua": "area",
    "so doan vien": "members", "doan vien": "members", "so dv": "members",
    "so luong doan vien": "members",
    "chi tieu": "quota",
}
_INT = re.compile(r"^\d{1,3}(?:[.,\s]\d{3})+$|^\d+$")
_PERCENT = re.compile(r"^(\d{1,3})(?:[.,](\d+))?\s*%$")


def _csv_header(cell: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", " ", fold(cell)).strip()


def _field_starts(line: str, delimiter: str) -> list[int]:
    """1-based columns where each field of a one-line CSV record starts."""
    starts = [1]
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            starts.append(index + 2)
    return starts


def _count(text: str) -> int | None:
    text = text.strip()
    if not _INT.match(text):
        return None
    return int(re.sub(r"[.,\s]", "", text))


def _load_units(
    csv_path: Path, shown: str, node_path: NodePath, positions: Positions,
    problems: list[Problem], raws: list[tuple[Path, str, bytes]]
) -> dict[str, Any] | None:
    """The rows of a units CSV as child org nodes, with their positions."""
    try:
        raw = _read_bytes(csv_path, shown)
        text = _decode(raw, shown)
    except _Stop as stop:
        problems.append(stop.problem)
        return None
    raws.append((csv_path, shown, raw))
    positions._add_text(shown, text)
    lines = text.split("\n")
    header_line = lines[0] if lines else ""
    delimiter = max(",;\t", key=header_line.count)
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(rows, None)
    if not header or not any(cell.strip() for cell in header):
        problems.append(Problem(shown, 1, 1, "tệp đơn vị trống",
                                "dòng đầu là tên cột: mã, tên đơn vị, khu vực, số đoàn viên, "
                                "chỉ tiêu"))
        return None
    columns: dict[int, str] = {}
    header_starts = _field_starts(header_line, delimiter)
    for index, cell in enumerate(header):
        name = _CSV_COLUMNS.get(_csv_header(cell))
        column_at = header_starts[index] if index < len(header_starts) else 1
        if name is None:
            if cell.strip():
                problems.append(Problem(
                    shown, 1, column_at, f"cột '{cell.strip()}' không dùng đến",
                    "các cột Loa đọc: mã, tên đơn vị, khu vực, số đoàn viên, chỉ tiêu",
                    Severity.WARNING))
            continue
        columns[index] = name
    missing = [label for key, label in (("slug", "mã"), ("name", "tên đơn vị"))
               if key not in columns.values()]
    if missing:
        problems.append(Problem(shown, 1, 1, f"thiếu cột {', '.join(missing)}",
                                "dòng đầu là tên cột: mã, tên đơn vị, khu vực, số đoàn viên, "
                                "chỉ tiêu"))
        return None
    units: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for row in rows:
        line = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        starts = _field_starts(lines[line - 1] if line - 1 < len(lines) else "", delimiter)
        values: dict[str, tuple[str, int]] = {}
        for index, name in columns.items():
            cell = row[index].strip() if index < len(row) else ""
            values[name] = (cell, starts[index] if index < len(starts) else 1)
        slug, slug_col = values["slug"]
        if not re.match(schema.SLUG, slug):
            problems.append(Problem(
                shown, line, slug_col,
                f"mã đơn vị '{slug}' không hợp lệ" if slug else "thiếu mã đơn vị",
                "mã chỉ gồm chữ thường không dấu, số, - và _ "
                f"(VD: {slugify(slug or values['name'][0], '-')})"))
            continue
        if slug in seen:
            problems.append(Problem(shown, line, slug_col,
                                    f"mã đơn vị '{slug}' bị lặp lại (đã có ở dòng {seen[slug]})",
                                    "mỗi đơn vị một mã riêng"))
            continue
        seen[slug] = line
        unit: dict[str, Any] = {}
        path = (*node_path, "children", slug)
        row_span = _Span(Pos(shown, line, 1), 0, 0)
        positions._set(path, row_span, row_span, True)
        name, name_col = values["name"]
        if not name:
            problems.append(Problem(shown, line, name_col, f"đơn vị '{slug}' thiếu tên",
                                    "điền cột tên đơn vị"))
            continue
        unit["name"] = unicodedata.normalize("NFC", name)
        positions._set((*path, "name"), _Span(Pos(shown, line, name_col), 0, 0), None, False)
        area = values.get("area", ("", 1))[0]
        if area:
            unit["area"] = unicodedata.normalize("NFC", area)
        members_text, members_col = values.get("members", ("", 1))
        members: int | None = None
        if members_text:
            members = _count(members_text)
            if members is None:
                problems.append(Problem(shown, line, members_col,
                                        f"số đoàn viên '{members_text}' không phải số",
                                        "viết số nguyên, VD: 5891 hoặc 5.891"))
            else:
                unit["members"] = members
                positions._set((*path, "members"),
                               _Span(Pos(shown, line, members_col), 0, 0), None, False)
        quota_text, quota_col = values.get("quota", ("", 1))
        if quota_text:
            quota_pos = _Span(Pos(shown, line, quota_col), 0, 0)
            percent = _PERCENT.match(quota_text)
            number = _count(quota_text)
            if percent:
                value = float(f"{percent.group(1)}.{percent.group(2) or 0}")
                if value > 100:
                    problems.append(Problem(shown, line, quota_col,
                                            f"chỉ tiêu '{quota_text}' vượt quá 100%",
                                            "chỉ tiêu phần trăm tính trên số đoàn viên"))
                    continue
                if members is None:
                    problems.append(Problem(shown, line, quota_col,
                                            f"chỉ tiêu '{quota_text}' cần số đoàn viên",
                                            "điền cột số đoàn viên, hoặc viết chỉ tiêu là một số"))
                    continue
                whole, frac = percent.group(1), percent.group(2)
                unit["quota"] = f"{whole}.{frac}%" if frac else f"{whole}%"
            elif number is not None:
                unit["quota"] = number
                if members is not None and number > members:
                    problems.append(Problem(
                        shown, line, quota_col,
                        f"chỉ tiêu {number} lớn hơn số đoàn viên {members}",
                        "kiểm tra lại hai cột này", Severity.WARNING))
            else:
                problems.append(Problem(shown, line, quota_col,
                                        f"chỉ tiêu '{quota_text}' không hợp lệ",
                                        "viết một số (VD: 2356) hoặc phần trăm số đoàn viên "
                                        "(VD: 40%)"))
                continue
            positions._set((*path, "quota"), quota_pos, None, False)
        units[slug] = unit
    return units


# --------------------------------------------------------------------------- includes & merge

_SECTIONS = ("organisations", "campaigns", "flows")
_SECTION_NAMES = {"organisations": "đơn vị", "campaigns": "chiến dịch", "flows": "kịch bản"}
_URL = re.compile(r"^[a-z]+://", re.IGNORECASE)


def _rebase_images(file: _File, rel_dir: str) -> None:
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
    file: _File, problems: list[Problem], raws: list[tuple[Path, str, bytes]]
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
                shown = _display(Path(file.shown).parent / units)
                loaded = _load_units(csv_path.resolve(), shown, node_path, file.positions,
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
    positions: Positions, other: _File, problems: list[Problem]
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
                    positions._adopt(other.positions, cpath)
            continue
        if key in into:
            _duplicate(kpath, positions, other, "khóa", problems)
            continue
        into[key] = value
        positions._adopt(other.positions, kpath)


def _duplicate(path: NodePath, positions: Positions, other: _File, what: str,
               problems: list[Problem]) -> None:
    first = positions.key(path)
    second = other.positions.key(path)
    problems.append(Problem(
        second.file, second.line, second.column,
        f"{what} '{path[-1]}' đã được khai báo ở {first.file}:{first.line}:{first.column}",
        "mỗi tên chỉ khai báo ở một tệp: đổi tên hoặc xóa một trong hai"))


def _include_targets(
    file: _File, problems: list[Problem]
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
                out.append((match.resolve(), _display(Path(file.shown).parent / rel), where))
            continue
        target = (file.path.parent / item).resolve()
        shown = _display(Path(file.shown).parent / item)
        if not target.exists():
            problems.append(Problem(pos.file, pos.line, pos.column,
                                    f"không tìm thấy tệp '{item}' để include",
                                    f"đường dẫn tính từ thư mục chứa {file.shown}; kiểm tra tên "
                                    "tệp"))
            continue
        out.append((target, shown, where))
    return out


def _merge(main: _File, others: list[_File], problems: list[Problem]) -> tuple[dict[str, Any],
                                                                               Positions]:
    data = dict(main.data)
    positions = Positions(Pos(main.shown, 1, 1))
    positions._adopt(main.positions, ())
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
                positions._set((key,), other.positions._nodes[(key,)],
                               other.positions._keys.get((key,)), True)
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
                positions._adopt(other.positions, path)
    return data, positions


# --------------------------------------------------------------------------- pydantic errors

_KEY_SYNONYMS = {  # Vietnamese words organisers may type as keys
    "hoi": "ask", "cau hoi": "ask", "noi": "say", "tin nhan": "say", "luu": "save",
    "chon": "choose", "lua chon": "choices", "anh": "image", "hinh": "image", "hinh anh": "image",
    "ten": "title", "tieu de": "title", "ket thuc": "end", "minh chung": "evidence",
    "den": "goto", "toi": "goto", "chuyen": "goto", "kieu": "expect", "nhap lai": "retry",
    "dot": "waves", "buoc": "steps", "cac buoc": "steps", "kich ban": "flows",
    "chien dich": "campaign", "don vi": "units", "chi tieu": "quota",
}


def _model_for(path: NodePath, node: Any) -> type[BaseModel] | None:
    """The schema model describing the mapping at `path` (for listing its allowed keys)."""
    models: dict[str, type[BaseModel]]
    if not path:
        return Bundle
    last = path[-1]
    parent = path[-2] if len(path) >= 2 else None
    if isinstance(last, int):
        if parent == "steps":
            models = {
                "evidence": schema.EvidenceStep, "say": schema.SayStep, "ask": schema.AskStep,
                "choose": schema.ChooseStep, "branch": schema.BranchStep,
                "action": schema.ActionStep, "end": schema.EndStep,
            }
            return models.get(step_kind(node) or "")
        models = {"choices": schema.ChoiceItem, "branch": schema.BranchCase, "waves": schema.Wave,
                  "all": schema.Condition, "any": schema.Condition}
        return models.get(str(parent))
    if len(path) == 2 and parent == "flows":
        return schema.Flow
    if len(path) == 2 and parent == "campaigns":
        return schema.Campaign
    if path[0] == "organisations" and (len(path) == 2 or parent == "children"):
        return schema.OrgNode
    if parent == "links":
        return schema.LinkTarget
    models = {"expect": schema.Expect, "when_no": schema.WhenNo, "if": schema.Condition,
              "not": schema.Condition}
    return models.get(str(last))


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    keys = [f.alias or name for name, f in model.model_fields.items()]
    if model is schema.Expect:
        return [k.value for k in schema.ExpectKind]
    return keys


def _locate(
    data: Any, loc: tuple[Any, ...], missing: bool
) -> tuple[NodePath, tuple[str, ...], bool]:
    """Follow a pydantic error location through the data as written.

    Returns the data path, the trailing names not present in the data (a missing field), and
    whether a union member tag was skipped on the way."""
    cur = data
    path: list[PathPart] = []
    skipped = False
    tag_skipped = -1
    i = 0
    while i < len(loc):
        elem = loc[i]
        last = i == len(loc) - 1
        if isinstance(cur, dict):
            in_steps = len(path) >= 2 and path[-2] == "steps" and isinstance(path[-1], int)
            if in_steps and tag_skipped != len(path) and elem == step_kind(cur) and not last:
                tag_skipped = len(path)  # the union tag, then the kind key of the same name
                i += 1
                continue
            shorthand = bool(path) and path[-1] == "expect" and len(cur) == 1 \
                and "kind" not in cur
            if shorthand:
                ((kind, params),) = cur.items()
                if kind in _KINDS and kind != "choice" and params is not None \
                        and not isinstance(params, dict):
                    # `expect: {text: 4}`: pydantic sees no kind and an unknown key.
                    return (*path, kind), (_BAD_PARAMS,), skipped
            if shorthand and elem not in cur:
                if elem == "kind":
                    path.append(kind)
                    break
                if elem == "options" and isinstance(params, list):
                    path.append(kind)
                    cur = params
                    i += 1
                    continue
                if isinstance(params, dict):
                    path.append(kind)
                    cur = params
                    if elem in ("min_date", "max_date"):
                        elem = elem[:3]
                        if elem in cur:
                            path.append(elem)
                            cur = cur[elem]
                            i += 1
                    continue
            if elem in cur:
                path.append(elem)
                cur = cur[elem]
            elif last and missing:
                return tuple(path), (str(elem),), skipped
            else:
                skipped = True
        elif isinstance(cur, list) and isinstance(elem, int) and 0 <= elem < len(cur):
            path.append(elem)
            cur = cur[elem]
        else:
            skipped = skipped or not isinstance(elem, int)
        i += 1
    return tuple(path), (), skipped


def _node(data: Any, path: NodePath) -> Any:
    cur = data
    for part in path:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


_ID_FIELDS = {"id", "save", "evidence", "field"}
_KINDS = {k.value for k in schema.ExpectKind}
_BAD_PARAMS = "\0params"  # marker: shorthand expect parameters that are not a mapping
GUIDE_HINT = "xem cách viết trong docs/huong-dan-kich-ban.md"
# Hints for the schema's own (Vietnamese) validation messages, by a phrase of the message.
_VALUE_HINTS = (
    ("kiểu choice", "VD: expect: {choice: [Android, iPhone]}"),
    ("min lớn hơn max", "đổi chỗ hai giá trị min và max"),
    ("điều kiện", "VD: if: {field: he_dieu_hanh, equals: Android}"),
    ("ngày 'to'", "kiểm tra lại ngày bắt đầu (from) và ngày kết thúc (to)"),
    ("cần khóa 'tag'", "thêm dòng 'tag: <nhãn>' vào bước này"),
    ("cần khóa 'flow'", "thêm dòng 'flow: <tên kịch bản>' vào bước này"),
)
_KIND_NAMES = ", ".join(k.value for k in schema.ExpectKind)


def _describe(value: Any) -> str:
    if value is None:
        return "để trống"
    if isinstance(value, dict):
        return "là một nhóm khóa"
    if isinstance(value, list):
        return "là một danh sách"
    if isinstance(value, bool):
        return f"là {'true' if value else 'false'}"
    return f"là '{value}'"


def _translate(
    error: Any, data: Any, path: NodePath, missing: tuple[str, ...], union: bool,
    positions: Positions,
) -> tuple[Pos, str, str]:
    kind: str = error["type"]
    ctx = error.get("ctx") or {}
    value = _node(data, path)
    name = str(path[-1]) if path else "tệp"
    label = f"'{name}'"  # how the node is named in messages
    if path and isinstance(path[-1], int) and len(path) >= 2:
        label = f"mục {path[-1] + 1} của '{path[-2]}'"
    if missing == (_BAD_PARAMS,):
        return (positions.key(path), f"tham số của kiểu '{path[-1]}' viết chưa đúng",
                f"VD: expect: {{{path[-1]}: {{min: 1, max: 10}}}}")
    if missing:
        field_name = missing[0]
        pos = positions.key(path)
        if field_name == "kind" and path and path[-1] == "expect":
            return pos, "expect cần một kiểu câu trả lời", f"các kiểu: {_KIND_NAMES}"
        where = f" trong {label}" if path else ""
        return pos, f"thiếu khóa '{field_name}'{where}", f"thêm dòng '{field_name}: ...'"
    if kind == "extra_forbidden":
        pos = positions.key(path)
        parent = path[:-1]
        if len(parent) >= 2 and parent[-2] == "expect":
            allowed = ["min", "max"]  # parameters of `expect: {kind: {...}}`
        else:
            model = _model_for(parent, _node(data, parent))
            allowed = _allowed_keys(model) if model else []
        suggestion = _KEY_SYNONYMS.get(fold(name)) if fold(name) in _KEY_SYNONYMS else None
        suggestion = suggestion if suggestion in allowed else closest(name, allowed)
        message = f"khóa không hợp lệ '{name}'"
        if suggestion:
            message += f" — có phải ý bạn là '{suggestion}'?"
        hint = f"các khóa dùng được ở đây: {', '.join(allowed)}" if allowed else "xóa khóa này"
        if " " in name and value is None:
            hint = "trong { }, dấu phẩy tách các khóa: câu có dấu phẩy phải đặt trong ngoặc kép"
        return pos, message, hint
    pos = positions.at(path)
    if kind == "step_kind":
        keys = list(value) if isinstance(value, dict) else []
        guess = None
        for key in keys:
            guess = _KEY_SYNONYMS.get(fold(key)) or closest(key, schema.STEP_KINDS)
            if guess in schema.STEP_KINDS:
                break
            guess = None
        if isinstance(value, str):
            first = value.split(" ", 1)[0]
            if first in schema.STEP_KINDS:
                return (pos, "bước này không có khóa nào",
                        f"thiếu dấu ':' sau '{first}'? viết '{first}: ...'")
        message = "bước không rõ loại: cần một trong các khóa say, ask, choose, branch, " \
                  "evidence, action, end"
        if guess and keys:
            return pos, message, f"có phải ý bạn là '{guess}'?"
        return pos, message, "mỗi bước bắt đầu bằng '- say:', '- ask:', '- choose:', ..."
    if union and path and path[-1] == "quota":
        return (pos, f"chỉ tiêu {_describe(value)}: cần một số hoặc phần trăm",
                "VD: quota: 2356 hoặc quota: 40%")
    if union and len(path) >= 2 and path[-2] == "links":
        return (pos, f"liên kết '{name}' cần tên một kịch bản",
                "VD: huyhieuso: cong_dan_so, hoặc huyhieuso: {flow: cong_dan_so, ref: cb01}")
    if union and path and path[-1] in ("equals", "in"):
        return (pos, f"giá trị so sánh {_describe(value)}: cần văn bản, số hoặc true/false",
                "VD: equals: Android")
    if kind in ("string_type", "str_type"):
        if value is None:
            return pos, f"{label} đang để trống", "viết nội dung sau dấu ':'"
        hint = "đặt văn bản trong ngoặc kép"
        if isinstance(value, dict | list):
            hint = "văn bản bắt đầu bằng '{' hoặc '[' phải đặt trong ngoặc kép"
        return pos, f"{label} cần văn bản nhưng {_describe(value)}", hint
    if kind in ("int_parsing", "int_type", "int_from_float"):
        hint = "chỉ viết chữ số, VD: 3"
        if isinstance(value, float) and round(value * 1000) % 1000 and value < 1000:
            hint = f"không dùng dấu chấm ngăn cách hàng nghìn: viết {round(value * 1000)}"
        return pos, f"{label} cần một số nguyên nhưng {_describe(value)}", hint
    if kind in ("float_parsing", "float_type"):
        return pos, f"{label} cần một số nhưng {_describe(value)}", "chỉ viết chữ số, VD: 10"
    if kind in ("bool_parsing", "bool_type"):
        return pos, f"{label} cần true hoặc false nhưng {_describe(value)}", "VD: exists: true"
    if kind == "string_pattern_mismatch":
        if name == "quota":
            return pos, f"chỉ tiêu '{value}' không hợp lệ", "VD: quota: 2356 hoặc quota: 40%"
        if name in _ID_FIELDS:
            return (pos, f"'{value}' không dùng được làm tên: chỉ gồm chữ thường không dấu, số "
                    "và dấu _, bắt đầu bằng chữ",
                    f"VD: {slugify(str(value))}")
        return pos, f"'{value}' không đúng dạng yêu cầu ({ctx.get('pattern', '')})", ""
    if kind == "string_too_short" and value == "":
        return pos, f"{label} đang để trống", "viết nội dung sau dấu ':'"
    if kind in ("too_short", "string_too_short"):
        what = {"steps": "kịch bản cần ít nhất một bước", "choices": "cần ít nhất một lựa chọn",
                "branch": "branch cần ít nhất một trường hợp"}.get(name)
        return pos, what or f"{label} quá ngắn", "thêm ít nhất một mục"
    if kind in ("greater_than_equal", "greater_than"):
        return pos, f"{label} phải từ {ctx.get('ge', ctx.get('gt'))} trở lên", ""
    if kind in ("less_than_equal", "less_than"):
        return pos, f"{label} tối đa là {ctx.get('le', ctx.get('lt'))}", ""
    if kind in ("enum", "literal_error"):
        options = [o.strip(" '") for o in re.split(r",| or ", str(ctx.get("expected", "")))
                   if o.strip(" '")]
        message = f"'{value}' không hợp lệ cho '{name}'"
        if isinstance(value, str) and closest(value, options):
            message += f" — {did_you_mean(value, options)}"
        return pos, message, f"chọn một trong: {', '.join(options)}"
    if kind.startswith("date") or kind.startswith("datetime"):
        return (pos, f"{label} cần một ngày nhưng {_describe(value)}",
                "viết năm-tháng-ngày, VD: 2023-08-07")
    if kind in ("tuple_type", "list_type"):
        return (pos, f"{label} cần một danh sách nhưng {_describe(value)}",
                "mỗi mục một dòng bắt đầu bằng '- ', hoặc viết [a, b]")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return (pos, f"{label} cần các khóa con nhưng {_describe(value)}",
                "viết các dòng 'khóa: giá trị' thụt vào 2 dấu cách")
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        quoted = re.search(r"'([^']+)'", message)
        if quoted and isinstance(value, dict) and quoted.group(1) in value:
            pos = positions.key((*path, quoted.group(1)))
        hint = next((h for needle, h in _VALUE_HINTS if needle in message), "")
        if quoted and ("mã liên kết" in message or "mã đơn vị" in message):
            hint = f"VD: {slugify(quoted.group(1), '-')}"
        return pos, message, hint
    return pos, str(error["msg"]), ""


def _schema_problems(data: dict[str, Any], error: ValidationError,
                     positions: Positions) -> list[Problem]:
    errors = error.errors()
    locs = [tuple(e["loc"]) for e in errors]
    grouped: dict[tuple[NodePath, tuple[str, ...]], tuple[Any, bool]] = {}
    for err, loc in zip(errors, locs, strict=True):
        if err["type"] == "too_short" and any(
            other != loc and other[: len(loc)] == loc for other in locs
        ):
            continue  # a list whose items all failed: the items' errors say why
        path, missing, union = _locate(data, loc, err["type"] == "missing")
        key = (path, missing)
        if key in grouped:
            grouped[key] = (grouped[key][0], True)
        else:
            grouped[key] = (err, union)
    extras = {path for (path, _), (err, _) in grouped.items() if err["type"] == "extra_forbidden"}
    problems = []
    for (path, missing), (err, union) in grouped.items():
        if missing and any(
            extra[:-1] == path and closest(str(extra[-1]), missing) for extra in extras
        ):
            continue  # a misspelt key: its "invalid key" problem already names the right one
        pos, message, hint = _translate(err, data, path, missing, union, positions)
        problems.append(Problem(pos.file, pos.line, pos.column, message, hint or GUIDE_HINT))
    return problems


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
    shown = _display(main_path)
    base_dir = main_path.resolve().parent
    problems: list[Problem] = []
    raws: list[tuple[Path, str, bytes]] = []
    main = _parse(main_path.resolve(), shown, problems)
    if main is None:
        return Loaded(None, tuple(problems), Positions(Pos(shown, 1, 1)), (), base_dir,
                      _hash(raws, base_dir), shown)
    raws.append((main.path, main.shown, main.raw))
    _expand_units(main, problems, raws)
    others: list[_File] = []
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
            included = _parse(target, target_shown, problems)
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
        problems.extend(_schema_problems(data, error, positions))
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


__all__ = [
    "MAX_FILE_BYTES",
    "Loaded",
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
