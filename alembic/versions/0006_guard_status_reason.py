"""auto-pause guard: campaign.status_reason, send_period.guard_tripped_at, and a partial index over
the unsubscribe and complaint events (the guard reads them every minute; clicks and conversions,
nearly all of the table, are left out of the index and cost it nothing)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 11:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEGATIVE = "type IN ('unsubscribe', 'complaint')"


def upgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table('send_period', schema=None) as batch_op:
        batch_op.add_column(sa.Column('guard_tripped_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_index('ix_event_negative_feedback', 'event', ['campaign_id'], unique=False,
                    postgresql_where=sa.text(NEGATIVE), sqlite_where=sa.text(NEGATIVE))


def downgrade() -> None:
    op.drop_index('ix_event_negative_feedback', table_name='event')
    with op.batch_alter_table('send_period', schema=None) as batch_op:
        batch_op.drop_column('guard_tripped_at')
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('status_reason')
