"""The organisation tree as the console needs it: parents, subtrees, names.

The compiled bundle keeps districts and their units but not who is whose parent (a unit of a
unit is flattened into its district), so the console reads the tree from the flows' own
`organisations:` (units from CSV files are children there, like any other node).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from flows.schema import OrgNode


@dataclass(frozen=True, slots=True)
class Node:
    slug: str
    name: str
    parent: str | None
    children: tuple[str, ...]
    depth: int
    area: str | None = None


class OrgTree:
    """Every node of the organisation tree by slug (a slug names one node: `loa check`)."""

    def __init__(self, nodes: Mapping[str, Node], districts: Iterable[str] = ()) -> None:
        self.nodes: Mapping[str, Node] = MappingProxyType(dict(nodes))
        # Nodes that own conversations (participants are filed under these slugs).
        self.districts = frozenset(d for d in districts if d in self.nodes)

    @classmethod
    def from_organisations(
        cls, organisations: Mapping[str, OrgNode], districts: Iterable[str] | None = None
    ) -> OrgTree:
        """The tree of a bundle's `organisations`. `districts`: the compiled bundle's district
        slugs; by default the compiler's rule (a node with channels, or a top-level node)."""
        nodes: dict[str, Node] = {}
        owners: list[str] = []

        def walk(children: Mapping[str, OrgNode], parent: str | None, depth: int) -> None:
            for slug, node in children.items():
                if slug in nodes:
                    continue
                nodes[slug] = Node(
                    slug, node.name, parent, tuple(node.children), depth, node.area
                )
                if node.channels or parent is None:
                    owners.append(slug)
                walk(node.children, slug, depth + 1)

        walk(organisations, None, 0)
        return cls(nodes, owners if districts is None else districts)

    def __contains__(self, slug: object) -> bool:
        return slug in self.nodes

    def name(self, slug: str | None) -> str:
        if not slug:
            return ""
        node = self.nodes.get(slug)
        return node.name if node is not None else slug

    def subtree(self, slug: str) -> frozenset[str]:
        """`slug` and every node below it (empty for an unknown slug)."""
        if slug not in self.nodes:
            return frozenset()
        out: set[str] = set()
        stack = [slug]
        while stack:
            current = stack.pop()
            if current in out:
                continue
            out.add(current)
            stack.extend(self.nodes[current].children)
        return frozenset(out)

    def ancestors(self, slug: str) -> tuple[str, ...]:
        """The nodes above `slug`, nearest first."""
        out: list[str] = []
        node = self.nodes.get(slug)
        while node is not None and node.parent is not None and node.parent not in out:
            out.append(node.parent)
            node = self.nodes.get(node.parent)
        return tuple(out)

    def walk(self, slug: str) -> Iterator[Node]:
        """The subtree of `slug` in file order, depth-first (for pickers)."""
        node = self.nodes.get(slug)
        if node is None:
            return
        yield node
        for child in node.children:
            yield from self.walk(child)

    def path(self, slug: str) -> str:
        """"Thành Đoàn › Quận Đoàn Tân Phú › Phường Tân Quý" (for an organiser's scope)."""
        names = [self.name(s) for s in reversed(self.ancestors(slug))]
        return " › ".join([*names, self.name(slug)])

    def roots(self) -> list[str]:
        return [slug for slug, node in self.nodes.items() if node.parent is None]


@lru_cache(maxsize=4)
def _load(path: str, version: str) -> OrgTree:
    from flows.loader import load

    loaded = load(path)
    bundle = loaded.bundle or loaded.parsed
    if bundle is None:
        return OrgTree({})
    return OrgTree.from_organisations(bundle.organisations)


def load_org_tree(path: Path | str, version: str = "") -> OrgTree:
    """The organisation tree of a flows file, read once per `version` (the runtime's content
    hash: pass it so a reloaded deployment is read again)."""
    return _load(str(Path(path).resolve()), version)


__all__ = ["Node", "OrgTree", "load_org_tree"]
