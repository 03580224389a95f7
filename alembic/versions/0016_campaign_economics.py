"""campaign.economics: the profit objective's margin, level costs and unsubscribe cost (JSON)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 21:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ADD/DROP COLUMN (SQLite >= 3.35 has both): a batch copy of `campaign` would trip the
# foreign keys of every table that references it.
def upgrade() -> None:
    op.add_column('campaign', sa.Column('economics', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('campaign', 'economics')
