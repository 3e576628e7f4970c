"""Reports: the organisation tree's closure and figures, reported entries, weekly activity

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

`organisation_paths` (ancestor, descendant) and `organisation_figures` are rebuilt from
flows.yaml at start-up; `reported_entries` holds what `action: report` records (a citizen's ID
only as a keyed hash); `participant_weeks` counts each participant's messages per week. Also
indexes `organisations.name` (participants' unit may be saved as a name).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organisation_figures",
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("members_total", sa.Integer(), nullable=True),
        sa.Column("quota_total", sa.Integer(), nullable=True),
        sa.Column("quota_label", sa.String(length=16), nullable=True),
        sa.Column("district", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_organisation_figures_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("organisation_id", name=op.f("pk_organisation_figures")),
    )
    op.create_table(
        "organisation_paths",
        sa.Column("ancestor_id", sa.Integer(), nullable=False),
        sa.Column("descendant_id", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ancestor_id"],
            ["organisations.id"],
            name=op.f("fk_organisation_paths_ancestor_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["descendant_id"],
            ["organisations.id"],
            name=op.f("fk_organisation_paths_descendant_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("ancestor_id", "descendant_id", name=op.f("pk_organisation_paths")),
    )
    op.create_index(
        op.f("ix_organisation_paths_descendant_id"),
        "organisation_paths",
        ["descendant_id"],
        unique=False,
    )
    op.create_table(
        "participant_weeks",
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_participant_weeks_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("participant_id", "week_start", name=op.f("pk_participant_weeks")),
    )
    op.create_index(
        op.f("ix_participant_weeks_week_start"), "participant_weeks", ["week_start"], unique=False
    )
    op.create_table(
        "reported_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("flow", sa.String(length=100), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=True),
        sa.Column("wave", sa.String(length=100), nullable=True),
        sa.Column("ref", sa.String(length=64), nullable=True),
        sa.Column("subject_hash", sa.String(length=64), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_reported_entries_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reported_entries")),
    )
    op.create_index(
        "ix_reported_entries_campaign_kind", "reported_entries", ["campaign", "kind"], unique=False
    )
    op.create_index(
        op.f("ix_reported_entries_created_at"), "reported_entries", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_reported_entries_participant_id"),
        "reported_entries",
        ["participant_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_reported_entries_subject_hash"), "reported_entries", ["subject_hash"], unique=False
    )
    op.create_index("ix_organisations_name", "organisations", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_organisations_name", table_name="organisations")
    op.drop_table("reported_entries")
    op.drop_table("participant_weeks")
    op.drop_table("organisation_paths")
    op.drop_table("organisation_figures")
