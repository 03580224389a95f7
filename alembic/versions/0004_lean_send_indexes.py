"""lean send ledger: drop the four secondary indexes and the four foreign keys that the claim and
delivery paid for on every row; keep the unique (period, customer) and one index on customer_id

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


# SQLite's foreign keys are unnamed: batch mode names them by this convention to drop them.
NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
FKS = [('campaign_id', 'campaign'), ('period_id', 'send_period'), ('customer_id', 'customer'),
       ('segment_id', 'segment')]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    with op.batch_alter_table('send', schema=None, naming_convention=NAMES) as batch_op:
        for column, table in FKS:
            name = f'fk_send_{column}_{table}' if sqlite else f'send_{column}_fkey'
            batch_op.drop_constraint(name, type_='foreignkey')
        batch_op.drop_index('ix_send_period_id')
        batch_op.drop_index('ix_send_campaign_segment_arm')
        batch_op.drop_index('ix_send_customer_campaign')
        batch_op.drop_index('ix_send_customer_sent_at')
        batch_op.create_index('ix_send_customer_id', ['customer_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('send', schema=None) as batch_op:
        for column, table in FKS:
            batch_op.create_foreign_key(f'send_{column}_fkey', table, [column], ['id'])
        batch_op.drop_index('ix_send_customer_id')
        batch_op.create_index('ix_send_customer_sent_at', ['customer_id', 'sent_at'], unique=False)
        batch_op.create_index('ix_send_customer_campaign', ['customer_id', 'campaign_id'], unique=False)
        batch_op.create_index('ix_send_campaign_segment_arm', ['campaign_id', 'segment_id', 'arm'], unique=False)
        batch_op.create_index('ix_send_period_id', ['period_id'], unique=False)
