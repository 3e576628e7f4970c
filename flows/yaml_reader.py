"""Reading one YAML file safely into plain values with the position of every node.

Only standard tags are accepted and nothing is ever constructed from a tag, anchors and
aliases are refused (no alias bombs), duplicate keys are errors. Scalars follow YAML 1.2 core
rules where YAML 1.1 surprises people: only `true`/`false` are booleans (`yes`, `no`, `on`,
`off` stay text), only plain decimal numbers are numbers (`0912345678`, `012`, `8:30` stay
text). Mapping keys are always text. All text is NFC-normalised.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from flows.problems import NodePath, Pos, Positions, Problem, Span

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 64


class Unreadable(Exception):
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


def _span(file: str, node: Node) -> Span:
    return Span(_pos(file, node.start_mark), node.start_mark.index, node.end_mark.index)


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
        self, node: Node, path: NodePath, key: Span | None = None, depth: int = 0
    ) -> Any:
        if depth > MAX_DEPTH:
            raise _Refused(node.start_mark, "cấu trúc lồng nhau quá sâu",
                           "tệp kịch bản không cần lồng quá vài chục cấp")
        collection = isinstance(node, MappingNode | SequenceNode)
        self.positions.record(path, _span(self.file, node), key, collection)
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


def display(path: Path) -> str:
    return os.path.normpath(str(path))


def read_bytes(path: Path, shown: str) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise Unreadable(Problem(shown, 1, 1, f"không tìm thấy tệp '{shown}'",
                            "kiểm tra tên và đường dẫn tệp")) from None
    except OSError as exc:
        raise Unreadable(Problem(shown, 1, 1, f"không đọc được tệp '{shown}': {exc.strerror}",
                            "kiểm tra quyền đọc tệp")) from None
    if not path.is_file():
        raise Unreadable(Problem(shown, 1, 1, f"'{shown}' không phải là một tệp",
                            "chỉ đường dẫn tới một tệp .yaml"))
    if size > MAX_FILE_BYTES:
        raise Unreadable(Problem(
            shown, 1, 1,
            f"tệp quá lớn ({size / 1024 / 1024:.1f} MB, "
            f"tối đa {MAX_FILE_BYTES // 1024 // 1024} MB)",
            "tách thành nhiều tệp nhỏ và dùng include"))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Unreadable(Problem(shown, 1, 1, f"không đọc được tệp '{shown}': {exc.strerror}",
                            "kiểm tra quyền đọc tệp")) from None


def decode_text(data: bytes, shown: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16").encode()
    if b"\x00" in data:
        raise Unreadable(Problem(shown, 1, 1, "tệp không phải văn bản (có vẻ là tệp nhị phân)",
                            "tệp kịch bản phải là văn bản lưu với bảng mã UTF-8"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise Unreadable(Problem(shown, line, column, "tệp không lưu bằng bảng mã UTF-8",
                            "mở tệp bằng trình soạn thảo và lưu lại với bảng mã UTF-8")) from None
    return text.replace("\r\n", "\n")


# --------------------------------------------------------------------------- one file


@dataclass(slots=True)
class YamlFile:
    path: Path  # resolved
    shown: str
    data: dict[str, Any]
    positions: Positions
    raw: bytes


def parse_file(path: Path, shown: str, problems: list[Problem]) -> YamlFile | None:
    try:
        raw = read_bytes(path, shown)
        text = decode_text(raw, shown)
    except Unreadable as stop:
        problems.append(stop.problem)
        return None
    positions = Positions(Pos(shown, 1, 1))
    positions.add_text(shown, text)
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
    return YamlFile(path, shown, data, positions, raw)


__all__ = [
    "MAX_FILE_BYTES",
    "Unreadable",
    "YamlFile",
    "decode_text",
    "display",
    "parse_file",
    "read_bytes",
]
