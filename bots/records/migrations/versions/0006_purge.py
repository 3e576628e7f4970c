"""Participants purged after a campaign's retention period

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

`participants.purged_at`: when `loa purge` removed the person's personal data because the
retention period of their campaigns ran out (bots/ops/purge.py). Unlike `deleted_at` (the
person asked), the row keeps counting in reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("participants", sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("purged_at")
