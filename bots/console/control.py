"""What the console's flows, units and reports pages need beyond `ConsoleDeps`' basics.

`FlowsControl` is the running deployment's flows as an admin manages them (the runtime's
`bots.reload.Reloader` is one): the live version, where the deployment's flows file is, and a
reload that checks, refuses or publishes. Also here: who may manage the deployment's flows, which
districts an organiser's subtree concerns, and which flows a district uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bots.console.access import roots_of
from bots.console.tree import OrgTree
from bots.records.models import Organiser, OrganiserRole
from flows.compiler import CompiledBundle


class FlowsControl(Protocol):
    """The deployment's flows as the runtime runs them (see bots/reload.py)."""

    switched_at: datetime | None  # when the live version became live in this process
    switched_by: str  # "start", "organiser:<id>", "cli", "signal", ...
    behind: str | None  # a published version this process could not find

    @property
    def config(self) -> Path: ...

    @property
    def version(self) -> str: ...

    def main_file(self) -> Path | None: ...

    async def reload(self, *, actor: str = "system", path: Path | None = None) -> Any: ...


def can_manage_flows(organiser: Organiser, tree: OrgTree) -> bool:
    """Flows are the deployment's, shared by every district: only an admin of a top-level
    organisation uploads or reloads them (a district's admin imports its own units)."""
    return organiser.role is OrganiserRole.ADMIN and organiser.org in tree.roots()


def visible_districts(organiser: Organiser, tree: OrgTree, bundle: CompiledBundle) -> list[str]:
    """The districts (nodes with their own chatbot) an organiser's subtree concerns, in file
    order: those inside it, and the district a unit-level account belongs to."""
    wanted: set[str] = set()
    owners = set(bundle.districts)
    for root in roots_of(organiser, tree):
        if root not in tree:
            continue
        inside = tree.subtree(root) & owners
        if inside:
            wanted |= inside
        else:
            above = next((a for a in tree.ancestors(root) if a in owners), None)
            if above is not None:
                wanted.add(above)
    return [slug for slug in bundle.districts if slug in wanted]


def flows_of_district(bundle: CompiledBundle, district: str) -> list[str]:
    """Flows a district's people can reach, in file order: its menu (or the deployment's) and
    links, and every flow those lead to or require."""
    found = bundle.districts.get(district)
    if found is None:
        return []
    menu = found.menu or bundle.menu
    if menu not in bundle.flows:  # the engine's own fallback: the first flow
        menu = next(iter(bundle.flows), None)
    start = [menu or "", bundle.registration or ""]  # "sửa thông tin" works everywhere
    start.extend(link.flow for link in found.links.values())
    return _closure(bundle, start)


def flows_of_districts(bundle: CompiledBundle, districts: Iterable[str]) -> list[str]:
    wanted: set[str] = set()
    for district in districts:
        wanted.update(flows_of_district(bundle, district))
    return [fid for fid in bundle.flows if fid in wanted]


def _closure(bundle: CompiledBundle, start: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    stack = [fid for fid in start if fid in bundle.flows]
    while stack:
        fid = stack.pop()
        if fid in seen:
            continue
        seen.add(fid)
        flow = bundle.flows[fid]
        for target in (*flow.flow_targets, flow.requires or ""):
            if target in bundle.flows and target not in seen:
                stack.append(target)
    return [fid for fid in bundle.flows if fid in seen]


__all__ = [
    "FlowsControl",
    "can_manage_flows",
    "flows_of_district",
    "flows_of_districts",
    "visible_districts",
]
