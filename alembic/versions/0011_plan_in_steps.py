"""send periods are planned segment by segment: `send_period.planned_at` (every segment claimed;
until then the last chunk to finish must not complete the period) and
`allocation_snapshot.claimed_at` (this segment's customers are claimed; a rerun of the coordinator
skips it). Before this revision a period's plan was one transaction, so a stored snapshot means its
segment was claimed, and a period with chunks (or completed) was fully planned.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 02:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('send_period', sa.Column('planned_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.add_column('allocation_snapshot', sa.Column('claimed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.execute("UPDATE send_period SET planned_at = COALESCE(started_at, created_at) "
               "WHERE chunks > 0 OR status = 'completed'")
    op.execute("UPDATE allocation_snapshot SET claimed_at = created_at")


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite has it since 3.35): a batch rebuild would drop and recreate
    # send_period, which other tables reference.
    op.drop_column('allocation_snapshot', 'claimed_at')
    op.drop_column('send_period', 'planned_at')
