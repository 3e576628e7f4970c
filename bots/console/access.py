"""Who may see what: an organiser's subtree as SQL conditions on participants.

A participant belongs to the district whose channel they talk to (`participants.district`) and,
once they answered a `unit` question, to a unit (a profile field). An organiser whose account is
rooted at node R sees a participant when

    their district is R or below R, or
    their district is above R and the unit they chose is R or below R

(a province's own channel can register someone into a district's unit: that district's
organisers see them). A reviewer limited to units gets the same rule for each unit. Anything
else does not exist for the organiser: routes answer 404, never 403, so an id guessed from
another subtree confirms nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bots.console.tree import OrgTree
from bots.records.models import (
    EvidenceItem,
    Organiser,
    OrganiserRole,
    Participant,
    Submission,
)
from flows.compiler import CompiledBundle
from flows.schema import ExpectKind


@dataclass(frozen=True, slots=True)
class Scope:
    """The participants one organiser may see (see the module docstring)."""

    districts: frozenset[str]  # every participant of these districts
    unit_districts: frozenset[str]  # ... and those of these districts whose unit is in `units`
    units: frozenset[str]

    def clause(self, unit: ColumnElement[str | None]) -> ColumnElement[bool]:
        """A condition on `Participant` (joined) and its unit expression."""
        parts: list[ColumnElement[bool]] = []
        if self.districts:
            parts.append(Participant.district.in_(sorted(self.districts)))
        if self.unit_districts and self.units:
            parts.append(
                and_(
                    Participant.district.in_(sorted(self.unit_districts)),
                    unit.in_(sorted(self.units)),
                )
            )
        if not parts:
            return false()
        return or_(*parts) if len(parts) > 1 else parts[0]

    def allows(self, district: str, unit: str | None) -> bool:
        """The same rule in Python (for values already loaded)."""
        if district in self.districts:
            return True
        return district in self.unit_districts and unit is not None and unit in self.units

    @property
    def empty(self) -> bool:
        return not self.districts and not (self.unit_districts and self.units)


def scope_of_roots(roots: Iterable[str], tree: OrgTree, districts: Iterable[str]) -> Scope:
    """The participants under any of `roots` (unknown slugs add nothing)."""
    owners = frozenset(districts)
    nodes: set[str] = set()
    above: set[str] = set()
    for root in roots:
        if root not in tree:
            continue
        nodes |= tree.subtree(root)
        above.update(tree.ancestors(root))
    return Scope(
        districts=frozenset(nodes & owners),
        unit_districts=frozenset(above & owners),
        units=frozenset(nodes),
    )


def roots_of(organiser: Organiser, tree: OrgTree) -> list[str]:
    """The subtree roots of an account: its org, or for a reviewer with units, those units
    that lie inside its org (a unit outside it grants nothing)."""
    if organiser.role is OrganiserRole.REVIEWER and organiser.units:
        inside = tree.subtree(organiser.org)
        return [unit for unit in organiser.units if unit in inside]
    return [organiser.org]


def scope_of(organiser: Organiser, tree: OrgTree, bundle: CompiledBundle) -> Scope:
    return scope_of_roots(roots_of(organiser, tree), tree, bundle.districts)


def unit_fields(bundle: CompiledBundle) -> list[str]:
    """Profile fields that hold a unit (answers of `expect: unit`), in a stable order."""
    return sorted(name for name, kind in bundle.field_kinds.items() if kind is ExpectKind.UNIT)


def unit_expr(bundle: CompiledBundle) -> ColumnElement[str | None]:
    """The participant's unit slug in SQL: the first unit field their profile has."""
    fields: list[ColumnElement[str | None]] = [
        Participant.profile[name].as_string() for name in unit_fields(bundle)
    ]
    if not fields:
        return literal(None)
    if len(fields) == 1:
        return fields[0]
    return func.coalesce(*fields)


def unit_of(profile: dict[str, object], bundle: CompiledBundle) -> str | None:
    for name in unit_fields(bundle):
        value = profile.get(name)
        if isinstance(value, str) and value:
            return value
    return None


# -- scoped look-ups: None means "not found" whether it does not exist or is out of scope -------


@dataclass(frozen=True, slots=True)
class Access:
    """An organiser's view of the records: scope plus how to find a participant's unit."""

    scope: Scope
    unit: ColumnElement[str | None]

    @classmethod
    def of(cls, organiser: Organiser, tree: OrgTree, bundle: CompiledBundle) -> Access:
        return cls(scope_of(organiser, tree, bundle), unit_expr(bundle))

    def where(self) -> ColumnElement[bool]:
        return self.scope.clause(self.unit)

    async def participant(self, session: AsyncSession, participant_id: int) -> Participant | None:
        return await session.scalar(
            select(Participant).where(Participant.id == participant_id, self.where())
        )

    async def submission(
        self, session: AsyncSession, submission_id: int
    ) -> tuple[Submission, Participant] | None:
        row = (
            await session.execute(
                select(Submission, Participant)
                .join(Participant, Participant.id == Submission.participant_id)
                .where(Submission.id == submission_id, self.where())
            )
        ).first()
        return (row[0], row[1]) if row is not None else None

    async def evidence(
        self, session: AsyncSession, evidence_id: int
    ) -> tuple[EvidenceItem, Submission, Participant] | None:
        row = (
            await session.execute(
                select(EvidenceItem, Submission, Participant)
                .join(Submission, Submission.id == EvidenceItem.submission_id)
                .join(Participant, Participant.id == Submission.participant_id)
                .where(EvidenceItem.id == evidence_id, self.where())
            )
        ).first()
        return (row[0], row[1], row[2]) if row is not None else None


# -- what a role may do (inside its scope) ------------------------------------------------------


def can_take_over(role: OrganiserRole) -> bool:
    """Talking to participants (hand-over, messages) is for organisers and admins."""
    return role in (OrganiserRole.ADMIN, OrganiserRole.ORGANISER)


def can_export(role: OrganiserRole) -> bool:
    return role in (OrganiserRole.ADMIN, OrganiserRole.ORGANISER)


def can_manage_accounts(role: OrganiserRole) -> bool:
    return role is OrganiserRole.ADMIN


def manageable(admin: Organiser, other_org: str, tree: OrgTree) -> bool:
    """An admin manages accounts rooted inside its own subtree."""
    return admin.role is OrganiserRole.ADMIN and other_org in tree.subtree(admin.org)


__all__ = [
    "Access",
    "Scope",
    "can_export",
    "can_manage_accounts",
    "can_take_over",
    "manageable",
    "roots_of",
    "scope_of",
    "scope_of_roots",
    "unit_expr",
    "unit_fields",
    "unit_of",
]
