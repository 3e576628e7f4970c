"""Organiser console: accounts, sessions, login attempts, reviews, hand-overs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Also indexes `evidence_items.qr_payload` for the duplicate checks (a hash index on PostgreSQL,
whose B-tree entries cannot hold a long payload).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organisers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "admin", "organiser", "reviewer", name="organiserrole", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("org", sa.String(length=100), nullable=False),
        sa.Column("units", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisers")),
        sa.UniqueConstraint("login", name=op.f("uq_organisers_login")),
    )
    op.create_index(op.f("ix_organisers_org"), "organisers", ["org"], unique=False)

    op.create_table(
        "organiser_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("organiser_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["organiser_id"],
            ["organisers.id"],
            name=op.f("fk_organiser_sessions_organiser_id_organisers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organiser_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_organiser_sessions_token_hash")),
    )
    op.create_index(
        op.f("ix_organiser_sessions_expires_at"), "organiser_sessions", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_organiser_sessions_organiser_id"),
        "organiser_sessions",
        ["organiser_id"],
        unique=False,
    )

    op.create_table(
        "login_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("login", sa.String(length=320), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    op.create_index(op.f("ix_login_attempts_at"), "login_attempts", ["at"], unique=False)
    op.create_index("ix_login_attempts_ip_at", "login_attempts", ["ip", "at"], unique=False)
    op.create_index("ix_login_attempts_login_at", "login_attempts", ["login", "at"], unique=False)

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("evidence_id", sa.Integer(), nullable=True),
        sa.Column("organiser_id", sa.Integer(), nullable=True),
        sa.Column(
            "decision",
            sa.Enum(
                "accept", "reject", "approve", name="reviewdecision", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["evidence_id"],
            ["evidence_items.id"],
            name=op.f("fk_reviews_evidence_id_evidence_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organiser_id"], ["organisers.id"], name=op.f("fk_reviews_organiser_id_organisers")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"], name=op.f("fk_reviews_submission_id_submissions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    op.create_index(op.f("ix_reviews_evidence_id"), "reviews", ["evidence_id"], unique=False)
    op.create_index(
        "ix_reviews_notify_notified_at", "reviews", ["notify", "notified_at"], unique=False
    )
    op.create_index(op.f("ix_reviews_organiser_id"), "reviews", ["organiser_id"], unique=False)
    op.create_index(op.f("ix_reviews_submission_id"), "reviews", ["submission_id"], unique=False)

    op.create_table(
        "handovers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("organiser_id", sa.Integer(), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["channel_identities.id"],
            name=op.f("fk_handovers_identity_id_channel_identities"),
        ),
        sa.ForeignKeyConstraint(
            ["organiser_id"], ["organisers.id"], name=op.f("fk_handovers_organiser_id_organisers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handovers")),
    )
    op.create_index(op.f("ix_handovers_identity_id"), "handovers", ["identity_id"], unique=False)
    op.create_index(op.f("ix_handovers_organiser_id"), "handovers", ["organiser_id"], unique=False)
    op.create_index(
        "ix_handovers_released_at", "handovers", ["released_at", "last_activity_at"], unique=False
    )

    op.create_index(
        "ix_evidence_items_qr_payload",
        "evidence_items",
        ["qr_payload"],
        unique=False,
        postgresql_using="hash",
    )


def downgrade() -> None:
    op.drop_index("ix_evidence_items_qr_payload", table_name="evidence_items")

    op.drop_index("ix_handovers_released_at", table_name="handovers")
    op.drop_index(op.f("ix_handovers_organiser_id"), table_name="handovers")
    op.drop_index(op.f("ix_handovers_identity_id"), table_name="handovers")
    op.drop_table("handovers")

    op.drop_index(op.f("ix_reviews_submission_id"), table_name="reviews")
    op.drop_index(op.f("ix_reviews_organiser_id"), table_name="reviews")
    op.drop_index("ix_reviews_notify_notified_at", table_name="reviews")
    op.drop_index(op.f("ix_reviews_evidence_id"), table_name="reviews")
    op.drop_table("reviews")

    op.drop_index("ix_login_attempts_login_at", table_name="login_attempts")
    op.drop_index("ix_login_attempts_ip_at", table_name="login_attempts")
    op.drop_index(op.f("ix_login_attempts_at"), table_name="login_attempts")
    op.drop_table("login_attempts")

    op.drop_index(op.f("ix_organiser_sessions_organiser_id"), table_name="organiser_sessions")
    op.drop_index(op.f("ix_organiser_sessions_expires_at"), table_name="organiser_sessions")
    op.drop_table("organiser_sessions")

    op.drop_index(op.f("ix_organisers_org"), table_name="organisers")
    op.drop_table("organisers")
