"""lean send ledger indexes: drop the four secondary indexes the claim and delivery paid for on
every row; keep the unique (period, customer) and one index on customer_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 18:10:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('send', schema=None) as batch_op:
        batch_op.drop_index('ix_send_period_id')
        batch_op.drop_index('ix_send_campaign_segment_arm')
        batch_op.drop_index('ix_send_customer_campaign')
        batch_op.drop_index('ix_send_customer_sent_at')
        batch_op.create_index('ix_send_customer_id', ['customer_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('send', schema=None) as batch_op:
        batch_op.drop_index('ix_send_customer_id')
        batch_op.create_index('ix_send_customer_sent_at', ['customer_id', 'sent_at'], unique=False)
        batch_op.create_index('ix_send_customer_campaign', ['customer_id', 'campaign_id'], unique=False)
        batch_op.create_index('ix_send_campaign_segment_arm', ['campaign_id', 'segment_id', 'arm'], unique=False)
        batch_op.create_index('ix_send_period_id', ['period_id'], unique=False)
