"""A period's health: its recent delivery rate (`recent_rate`, decayed with `progress_epoch`, the
time of its last progress, in epoch seconds so the update is plain arithmetic on both databases),
its failures by reason (`failures`), and when the sweeper last handed its work out again
(`redispatched_at`); and who holds a chunk (`send_chunk.holder`: host, PID namespace and process),
so a worker on the same host can take over a dead process's chunk at once instead of waiting for its
lease to run out.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 16:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('send_period', sa.Column('progress_epoch', sa.Float(), nullable=True))
    op.add_column('send_period', sa.Column('recent_rate', sa.Float(), nullable=False, server_default='0'))
    op.add_column('send_period', sa.Column('failures', sa.JSON(), nullable=True))
    op.add_column('send_period', sa.Column('redispatched_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.add_column('send_chunk', sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    op.drop_column('send_chunk', 'holder')
    for column in ('redispatched_at', 'failures', 'recent_rate', 'progress_epoch'):
        op.drop_column('send_period', column)
