"""Send windows: a campaign's local send times (`campaign.send_windows`, its default time zone
`send_window_timezone`), each chunk's release time, window and size (`send_chunk.release_at`,
`window`, `size`), and the customers whose time zone attribute was unknown
(`send_period.timezone_fallbacks`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 21:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('campaign', sa.Column('send_windows', sa.JSON(), nullable=True))
    op.add_column('campaign', sa.Column('send_window_timezone', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('send_period', sa.Column('timezone_fallbacks', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('send_chunk', sa.Column('release_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.add_column('send_chunk', sa.Column('window', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('send_chunk', sa.Column('size', sa.Integer(), nullable=True))


def downgrade() -> None:
    for column in ('size', 'window', 'release_at'):
        op.drop_column('send_chunk', column)
    op.drop_column('send_period', 'timezone_fallbacks')
    op.drop_column('campaign', 'send_window_timezone')
    op.drop_column('campaign', 'send_windows')
