"""The organisation tree in the records database, from flows.yaml: what reports group by.

`sync_organisations(db, compiled_bundle)` runs at start-up (and before `loa report`): it
upserts every node into `organisations` (slug, name, parent, members, quota, area), rebuilds
the closure table `organisation_paths` (every ancestor/descendant pair) and the figures each
node's subtree adds up to (`organisation_figures`). A node no longer in flows.yaml keeps its
row (old records still name it) but has no figures, so reports leave it out.

Quotas: a number, or a percent of members rounded half up (Bến Tre: 40% of 5,891 members is
2,356.4 → 2,356). A node without its own member count or quota adds up its children's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots.records.models import Organisation, OrganisationFigures, OrganisationPath
from flows.schema import OrgNode

log = logging.getLogger("loa.reports")

# Any value for PostgreSQL's transaction-scoped advisory lock: two processes starting together
# synchronise one after the other instead of colliding on new slugs.
_SYNC_LOCK = 0x10A0_0005


class HasOrganisations(Protocol):
    """A compiled bundle (`flows.compiler.CompiledBundle`) or a `flows.schema.Bundle`."""

    @property
    def organisations(self) -> Mapping[str, OrgNode]: ...


@dataclass(frozen=True, slots=True)
class OrgRow:
    """One node of the tree as the records keep it."""

    slug: str
    name: str
    parent: str | None
    depth: int
    position: int  # depth-first order of flows.yaml
    members: int | None  # as declared
    quota: int | None  # declared as a number
    quota_percent: float | None  # declared as a percent of members
    area: str | None
    district: bool  # owns messaging channels, or is a top-level node
    members_total: int | None  # declared, else the children's sum
    quota_total: int | None  # number of people: declared, percent of members_total, or sum
    ancestors: tuple[str, ...]  # nearest first

    @property
    def quota_label(self) -> str | None:
        if self.quota is not None:
            return str(self.quota)
        if self.quota_percent is not None:
            return f"{self.quota_percent:g}%"
        return None


def percent_of(members: int, percent: float) -> int:
    """`percent` % of `members`, rounded half up (5,891 × 40% = 2,356.4 → 2,356)."""
    exact = Decimal(members) * Decimal(str(percent)) / Decimal(100)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def org_rows(organisations: Mapping[str, OrgNode]) -> list[OrgRow]:
    """Every node, parents before children, with its subtree's totals. A slug written twice
    keeps its first node (`loa check` reports the second)."""
    out: list[OrgRow] = []
    seen: set[str] = set()

    def walk(
        nodes: Mapping[str, OrgNode], parent: str | None, ancestors: tuple[str, ...]
    ) -> list[OrgRow]:
        made: list[OrgRow] = []
        for slug, node in nodes.items():
            if slug in seen:
                continue
            seen.add(slug)
            index = len(out)
            out.append(None)  # type: ignore[arg-type]  # its place in file order
            children = walk(node.children, slug, (slug, *ancestors))
            row = _row(slug, node, parent, ancestors, index, children)
            out[index] = row
            made.append(row)
        return made

    walk(organisations, None, ())
    return out


def _row(
    slug: str,
    node: OrgNode,
    parent: str | None,
    ancestors: tuple[str, ...],
    position: int,
    children: list[OrgRow],
) -> OrgRow:
    quota: int | None = None
    percent: float | None = None
    if isinstance(node.quota, int):
        quota = node.quota
    elif isinstance(node.quota, str):
        percent = float(node.quota.rstrip("%"))
    members_total = node.members
    if members_total is None:
        members_total = _sum(c.members_total for c in children)
    if quota is not None:
        quota_total: int | None = quota
    elif percent is not None:
        quota_total = percent_of(members_total, percent) if members_total is not None else None
    else:
        quota_total = _sum(c.quota_total for c in children)
    return OrgRow(
        slug=slug,
        name=node.name,
        parent=parent,
        depth=len(ancestors),
        position=position,
        members=node.members,
        quota=quota,
        quota_percent=percent,
        area=node.area,
        district=bool(node.channels) or parent is None,
        members_total=members_total,
        quota_total=quota_total,
        ancestors=ancestors,
    )


def _sum(values: Iterable[int | None]) -> int | None:
    found = [v for v in values if v is not None]
    return sum(found) if found else None


Sessions = async_sessionmaker[AsyncSession]


async def sync_organisations(
    db: Any, bundle: HasOrganisations, *, now: datetime | None = None
) -> int:
    """Bring the records' organisation tables in line with the bundle's tree; returns the
    number of nodes. `db`: a `bots.records.Database` (or a session maker for writes)."""
    sessions: Sessions = getattr(db, "sessions", db)
    rows = org_rows(bundle.organisations)
    now = now or datetime.now(UTC)
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SYNC_LOCK})
        existing = {o.slug: o for o in (await session.scalars(select(Organisation))).all()}
        ids: dict[str, int] = {}
        for row in rows:
            org = existing.get(row.slug)
            parent_id = ids.get(row.parent) if row.parent is not None else None
            values = {
                "name": row.name,
                "parent_id": parent_id,
                "members": row.members,
                "quota": row.quota,
                "quota_percent": round(row.quota_percent) if row.quota_percent else None,
                "area": row.area,
            }
            if org is None:
                org = Organisation(slug=row.slug, created_at=now, updated_at=now, **values)
                session.add(org)
                await session.flush()
            elif any(getattr(org, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(org, k, v)
                org.updated_at = now
            ids[row.slug] = org.id
        await session.flush()
        await session.execute(delete(OrganisationPath))
        await session.execute(delete(OrganisationFigures))
        paths = [
            {"ancestor_id": ids[ancestor], "descendant_id": ids[row.slug], "depth": depth}
            for row in rows
            for depth, ancestor in enumerate((row.slug, *row.ancestors))
        ]
        if paths:
            await session.execute(insert(OrganisationPath), paths)
        figures = [
            {
                "organisation_id": ids[row.slug],
                "position": row.position,
                "depth": row.depth,
                "members_total": row.members_total,
                "quota_total": row.quota_total,
                "quota_label": row.quota_label,
                "district": row.district,
                "active": True,
                "synced_at": now,
            }
            for row in rows
        ]
        if figures:
            await session.execute(insert(OrganisationFigures), figures)
    log.info("organisation tree synchronised: %d nodes", len(rows))
    return len(rows)


__all__ = ["HasOrganisations", "OrgRow", "org_rows", "percent_of", "sync_organisations"]
