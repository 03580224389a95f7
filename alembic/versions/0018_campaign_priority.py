"""Several campaigns at once: campaign.priority (who gets a customer at the frequency cap) and
send_period.lost_to (the targeted customers that went to other campaigns, by campaign).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 21:50:00
"""
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("campaign", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("send_period", sa.Column("lost_to", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("send_period", "lost_to")
    op.drop_column("campaign", "priority")
