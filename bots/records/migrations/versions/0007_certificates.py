"""Certificates and the one-time codes of the certificate look-up page

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

`certificates`: one per approved submission (unique), with the name and unit exactly as
printed, the serial the public verify page looks up, the content hashes of the PNG, PDF and
badge, and how it reached the person (chat, e-mail). `certificate_codes`: hashed one-time codes
sent to a person who looks their certificates up on /chung-nhan (bots/certificates).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "certificate_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        _time("created_at", nullable=False),
        _time("expires_at", nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("used_at"),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("sent_via", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_codes")),
    )
    op.create_index(op.f("ix_certificate_codes_created_at"), "certificate_codes", ["created_at"])
    op.create_index(op.f("ix_certificate_codes_ip"), "certificate_codes", ["ip"])
    op.create_index(op.f("ix_certificate_codes_phone"), "certificate_codes", ["phone"])
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=True),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("unit", sa.String(length=255), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "requested", "issued", "failed", "revoked",
                name="certificatestatus", native_enum=False, length=32,
            ),
            nullable=False,
        ),
        _time("requested_at", nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=True),
        _time("issued_at"),
        sa.Column("png_sha256", sa.String(length=64), nullable=True),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=True),
        sa.Column("badge_sha256", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_via", sa.String(length=16), nullable=True),
        _time("delivered_at"),
        _time("chat_sent_at"),
        _time("emailed_at"),
        sa.Column("email_message_id", sa.String(length=255), nullable=True),
        sa.Column("email_attempts", sa.Integer(), nullable=False),
        sa.Column("email_error", sa.Text(), nullable=True),
        _time("revoked_at"),
        sa.Column("revoked_reason", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["channel_identities.id"],
            name=op.f("fk_certificates_identity_id_channel_identities"),
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"], ["participants.id"],
            name=op.f("fk_certificates_participant_id_participants"),
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"],
            name=op.f("fk_certificates_submission_id_submissions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificates")),
        sa.UniqueConstraint(
            "campaign", "sequence", name=op.f("uq_certificates_campaign_sequence")
        ),
        sa.UniqueConstraint("serial", name=op.f("uq_certificates_serial")),
        sa.UniqueConstraint("submission_id", name=op.f("uq_certificates_submission_id")),
    )
    op.create_index(op.f("ix_certificates_badge_sha256"), "certificates", ["badge_sha256"])
    op.create_index(op.f("ix_certificates_district"), "certificates", ["district"])
    op.create_index(op.f("ix_certificates_participant_id"), "certificates", ["participant_id"])
    op.create_index(op.f("ix_certificates_pdf_sha256"), "certificates", ["pdf_sha256"])
    op.create_index(op.f("ix_certificates_png_sha256"), "certificates", ["png_sha256"])
    op.create_index("ix_certificates_status", "certificates", ["status"])


def downgrade() -> None:
    op.drop_table("certificates")  # its indexes go with it
    op.drop_table("certificate_codes")
