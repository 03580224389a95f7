"""waves inside a period (test, then send)

- `campaign.waves`: {"first_share", "wait_hours"}, or null for one wave per period (every existing campaign).
- `send_period.waves`, `.wave`, `.next_wave_at`: the setting as the period started, the wave being planned, when
  the next wave may be planned.
- `allocation_snapshot.assigned`: how many customers the snapshot assigned (weights the waves' mixture in the report).
- `allocation_snapshot.wave`: the period's wave a snapshot allocated (1 for every existing snapshot); a
  period has one snapshot per segment and wave, so the unique (period, segment) becomes (period, segment, wave).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 20:05:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's unique constraints are unnamed: batch mode names them by this convention to drop them.
NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _old_name() -> str:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    return 'uq_allocation_snapshot_period_id_segment_id' if sqlite else 'allocation_snapshot_period_id_segment_id_key'


def upgrade() -> None:
    op.add_column('campaign', sa.Column('waves', sa.JSON(), nullable=True))
    op.add_column('allocation_snapshot', sa.Column('wave', sa.Integer(), nullable=False, server_default='1'))
    op.add_column('allocation_snapshot', sa.Column('assigned', sa.Integer(), nullable=True))
    op.add_column('send_period', sa.Column('waves', sa.JSON(), nullable=True))
    op.add_column('send_period', sa.Column('wave', sa.Integer(), nullable=False, server_default='1'))
    op.add_column('send_period', sa.Column('next_wave_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table('allocation_snapshot', schema=None, naming_convention=NAMES) as batch_op:
        batch_op.drop_constraint(_old_name(), type_='unique')
        batch_op.create_unique_constraint('uq_allocation_snapshot_period_segment_wave',
                                          ['period_id', 'segment_id', 'wave'])


def downgrade() -> None:
    with op.batch_alter_table('allocation_snapshot', schema=None) as batch_op:
        batch_op.drop_constraint('uq_allocation_snapshot_period_segment_wave', type_='unique')
        batch_op.create_unique_constraint(_old_name(), ['period_id', 'segment_id'])
    op.drop_column('allocation_snapshot', 'wave')
    op.drop_column('allocation_snapshot', 'assigned')
    op.drop_column('send_period', 'next_wave_at')
    op.drop_column('send_period', 'wave')
    op.drop_column('send_period', 'waves')
    op.drop_column('campaign', 'waves')
