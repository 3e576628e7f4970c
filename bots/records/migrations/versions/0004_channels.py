"""Channel cursors (Telegram long-poll offsets, open health notices) and sent message ids

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Also gives `organiser_notifications.kind` the value "channel" (a plain VARCHAR(32): no change
to the column).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_cursors",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_channel_cursors")),
    )
    op.create_table(
        "sent_messages",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "message_id", name=op.f("pk_sent_messages")),
    )
    op.create_index(
        op.f("ix_sent_messages_sent_at"), "sent_messages", ["sent_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sent_messages_sent_at"), table_name="sent_messages")
    op.drop_table("sent_messages")
    op.drop_table("channel_cursors")
