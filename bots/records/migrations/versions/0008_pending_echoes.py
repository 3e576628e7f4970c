"""Zalo OA echoes waiting to be judged

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23

`pending_echoes`: an echo whose message id was not recorded as sent when its webhook arrived is
kept here before the webhook is acknowledged, and judged after a grace period by whichever
process gets to it (bots/channels.py): a pause for the person when it is still not the bot's
own, else dropped. A process killed during the grace period thus loses no human reply.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_echoes",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("district", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "message_id", name=op.f("pk_pending_echoes")),
    )
    op.create_index(op.f("ix_pending_echoes_seen_at"), "pending_echoes", ["seen_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_echoes_seen_at"), table_name="pending_echoes")
    op.drop_table("pending_echoes")
