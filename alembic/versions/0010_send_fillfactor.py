"""send ledger: fillfactor 35 on PostgreSQL, so delivery's UPDATE of each row (status, message_id,
sent_at) finds room on the row's own page and stays a heap-only (HOT) update: no new entries in the
ledger's three indexes and no second copy of the row elsewhere in the table. With the default 100
the pages the claim's COPY wrote are full, every delivered row moves, and each move writes three
index entries. 35: a page holds about 27 claimed rows and their 27 delivered versions (the old ones
cannot be pruned before the batch commits); the heap ends up the size the moved rows made it anyway.
Only pages written from now on are affected (no rewrite of existing data). SQLite: nothing to do.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 21:15:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE send SET (fillfactor = 35)")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE send RESET (fillfactor)")
