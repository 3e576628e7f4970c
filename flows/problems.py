"""Problems found in a configuration and where they are: file, line and column of every node
of the (merged) YAML document, addressed by path tuples such as
`("flows", "dang_ky", "steps", 2, "expect")`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
class Span:
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
        self._nodes: dict[NodePath, Span] = {}
        self._keys: dict[NodePath, Span] = {}
        self._collections: set[NodePath] = set()
        self._texts: dict[str, str] = {}

    # -- building (loader only)
    def add_text(self, file: str, text: str) -> None:
        self._texts[file] = text

    def record(self, path: NodePath, node: Span, key: Span | None, collection: bool) -> None:
        self._nodes[path] = node
        if key is not None:
            self._keys[path] = key
        if collection:
            self._collections.add(path)
        else:
            self._collections.discard(path)

    def adopt(self, other: Positions, prefix: NodePath, below: bool = True) -> None:
        """Take `other`'s positions of `prefix` and (unless `below` is false) everything
        under it."""
        n = len(prefix)
        for path, span in other._nodes.items():
            if path[:n] == prefix and (below or path == prefix):
                self._nodes[path] = span
                if path in other._collections:
                    self._collections.add(path)
        for path, span in other._keys.items():
            if path[:n] == prefix and (below or path == prefix):
                self._keys[path] = span
        self._texts.update(other._texts)

    # -- reading
    def _nearest(self, table: dict[NodePath, Span], path: NodePath) -> Span | None:
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


__all__ = ["NodePath", "PathPart", "Pos", "Positions", "Problem", "Severity", "Span"]
