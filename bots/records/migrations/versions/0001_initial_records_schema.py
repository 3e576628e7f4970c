"""Initial records schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("members", sa.Integer(), nullable=True),
        sa.Column("quota", sa.Integer(), nullable=True),
        sa.Column("quota_percent", sa.Integer(), nullable=True),
        sa.Column("area", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["organisations.id"],
            name=op.f("fk_organisations_parent_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organisations_slug")),
    )
    op.create_index(
        op.f("ix_organisations_parent_id"), "organisations", ["parent_id"], unique=False
    )

    op.create_table(
        "participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("consent_given_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participants")),
    )
    op.create_index(op.f("ix_participants_district"), "participants", ["district"], unique=False)
    op.create_index(op.f("ix_participants_email"), "participants", ["email"], unique=False)
    op.create_index(op.f("ix_participants_name"), "participants", ["name"], unique=False)
    op.create_index(op.f("ix_participants_phone"), "participants", ["phone"], unique=False)

    op.create_table(
        "processed_inbound",
        sa.Column("conversation", sa.String(length=512), nullable=False),
        sa.Column("inbound_id", sa.String(length=255), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation", "inbound_id", name=op.f("pk_processed_inbound")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_audit_log_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_index(
        op.f("ix_audit_log_participant_id"), "audit_log", ["participant_id"], unique=False
    )

    op.create_table(
        "channel_identities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "webchat",
                "console",
                "messenger",
                "zalo",
                "zalobot",
                "telegram",
                name="channel",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("entry_ref", sa.String(length=64), nullable=True),
        sa.Column("referral_code", sa.String(length=64), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_channel_identities_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_identities")),
        sa.UniqueConstraint(
            "district",
            "channel",
            "user_id",
            name=op.f("uq_channel_identities_district_channel_user_id"),
        ),
    )
    op.create_index(
        op.f("ix_channel_identities_participant_id"),
        "channel_identities",
        ["participant_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_channel_identities_referral_code"),
        "channel_identities",
        ["referral_code"],
        unique=False,
    )

    op.create_table(
        "organiser_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=True),
        sa.Column(
            "kind",
            sa.Enum("notify", "handover", name="notificationkind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_organiser_notifications_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organiser_notifications")),
    )
    op.create_index(
        op.f("ix_organiser_notifications_district"),
        "organiser_notifications",
        ["district"],
        unique=False,
    )
    op.create_index(
        op.f("ix_organiser_notifications_participant_id"),
        "organiser_notifications",
        ["participant_id"],
        unique=False,
    )

    op.create_table(
        "referral_credits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("flow", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_referral_credits_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_credits")),
        sa.UniqueConstraint(
            "code",
            "participant_id",
            "flow",
            name=op.f("uq_referral_credits_code_participant_id_flow"),
        ),
    )
    op.create_index(op.f("ix_referral_credits_code"), "referral_credits", ["code"], unique=False)
    op.create_index(
        op.f("ix_referral_credits_participant_id"),
        "referral_credits",
        ["participant_id"],
        unique=False,
    )

    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("wave", sa.String(length=100), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "submitted",
                "approved",
                "rejected",
                name="submissionstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_submissions_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    op.create_index(
        "ix_submissions_campaign_status", "submissions", ["campaign", "status"], unique=False
    )
    op.create_index(
        op.f("ix_submissions_participant_id"), "submissions", ["participant_id"], unique=False
    )

    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_tags_participant_id_participants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("participant_id", "tag", name=op.f("uq_tags_participant_id_tag")),
    )
    op.create_index(op.f("ix_tags_tag"), "tags", ["tag"], unique=False)

    op.create_table(
        "evidence_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("criterion", sa.String(length=100), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("text", "image", "file", name="evidencekind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("file_path", sa.String(length=255), nullable=True),
        sa.Column("mime", sa.String(length=127), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("platform_unique_id", sa.String(length=255), nullable=True),
        sa.Column("qr_payload", sa.Text(), nullable=True),
        sa.Column("perceptual_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "accepted",
                "rejected",
                "replaced",
                name="evidencestatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_evidence_items_submission_id_submissions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence_items")),
    )
    op.create_index(
        op.f("ix_evidence_items_perceptual_hash"),
        "evidence_items",
        ["perceptual_hash"],
        unique=False,
    )
    op.create_index(
        op.f("ix_evidence_items_platform_unique_id"),
        "evidence_items",
        ["platform_unique_id"],
        unique=False,
    )
    op.create_index(op.f("ix_evidence_items_sha256"), "evidence_items", ["sha256"], unique=False)
    op.create_index(
        op.f("ix_evidence_items_submission_id"), "evidence_items", ["submission_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_evidence_items_submission_id"), table_name="evidence_items")
    op.drop_index(op.f("ix_evidence_items_sha256"), table_name="evidence_items")
    op.drop_index(op.f("ix_evidence_items_platform_unique_id"), table_name="evidence_items")
    op.drop_index(op.f("ix_evidence_items_perceptual_hash"), table_name="evidence_items")

    op.drop_table("evidence_items")
    op.drop_index(op.f("ix_tags_tag"), table_name="tags")

    op.drop_table("tags")
    op.drop_index(op.f("ix_submissions_participant_id"), table_name="submissions")
    op.drop_index("ix_submissions_campaign_status", table_name="submissions")

    op.drop_table("submissions")
    op.drop_index(op.f("ix_referral_credits_participant_id"), table_name="referral_credits")
    op.drop_index(op.f("ix_referral_credits_code"), table_name="referral_credits")

    op.drop_table("referral_credits")
    op.drop_index(
        op.f("ix_organiser_notifications_participant_id"), table_name="organiser_notifications"
    )
    op.drop_index(op.f("ix_organiser_notifications_district"), table_name="organiser_notifications")

    op.drop_table("organiser_notifications")
    op.drop_index(op.f("ix_channel_identities_referral_code"), table_name="channel_identities")
    op.drop_index(op.f("ix_channel_identities_participant_id"), table_name="channel_identities")

    op.drop_table("channel_identities")
    op.drop_index(op.f("ix_audit_log_participant_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")

    op.drop_table("audit_log")
    op.drop_table("processed_inbound")
    op.drop_index(op.f("ix_participants_phone"), table_name="participants")
    op.drop_index(op.f("ix_participants_name"), table_name="participants")
    op.drop_index(op.f("ix_participants_email"), table_name="participants")
    op.drop_index(op.f("ix_participants_district"), table_name="participants")

    op.drop_table("participants")
    op.drop_index(op.f("ix_organisations_parent_id"), table_name="organisations")

    op.drop_table("organisations")
