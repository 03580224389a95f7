"""A campaign's materialized lift report (`report_snapshot`): computed by the workers as periods
close and feedback folds, and served as is while nothing it reads has changed.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 19:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'report_snapshot',
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('mark', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('computed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('compute_seconds', sa.Float(), nullable=False),
        sa.Column('report', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
        sa.PrimaryKeyConstraint('campaign_id'),
    )


def downgrade() -> None:
    op.drop_table('report_snapshot')
