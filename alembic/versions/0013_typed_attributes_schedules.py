"""typed customer attributes, one address per customer, schedules, audience filters and template
versions.

- Attributes imported from CSV before this revision are all text: each attribute is re-typed the way
  a CSV import types it now (a column whose every non-empty value is an integer becomes integers,
  and so on: campaigns.attributes), and empty text values are dropped (an empty cell is no attribute).
- `ix_customer_email_lower`: the import refuses an address already held by another customer.
- `campaign.schedule` (weekday, hour, time zone or cron of a recurring cadence), `campaign.audience`
  (an attribute filter and customer lists), `campaign.template_version` (1, then one more per fix).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 16:40:00
"""
import json
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from campaigns import attributes

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000


def _load(value):
    return json.loads(value) if isinstance(value, str) else (value or {})


def _retype_attributes(conn) -> None:
    """Two passes in id order, never all rows in memory: the type of each attribute, then the rows."""
    customer = sa.table('customer', sa.column('id', sa.Integer), sa.column('attributes', sa.JSON))

    def batches():
        last = 0
        while rows := conn.execute(sa.select(customer.c.id, customer.c.attributes).where(customer.c.id > last)
                                   .order_by(customer.c.id).limit(BATCH)).all():
            last = rows[-1][0]
            yield [(cid, _load(attrs)) for cid, attrs in rows]

    candidates: dict[str, list[str]] = {}  # what each attribute can still be; [] is text
    for rows in batches():
        for _, attrs in rows:
            for key, value in attrs.items():
                kinds = candidates.setdefault(key, ['int', 'decimal', 'bool', 'date'])
                if not kinds or (isinstance(value, str) and not value.strip()):
                    continue
                kinds[:] = [k for k in kinds if isinstance(value, str) and attributes.fits(k, value.strip())]
    kinds = {key: (left[0] if left else 'text') for key, left in candidates.items()}
    for rows in batches():
        changed = []
        for cid, attrs in rows:
            typed = {k: _typed(kinds.get(k, 'text'), v) for k, v in attrs.items()
                     if not (isinstance(v, str) and not v.strip())}
            if typed != attrs:
                changed.append({'cid': cid, 'attrs': typed})
        if changed:
            conn.execute(sa.update(customer).where(customer.c.id == sa.bindparam('cid'))
                         .values(attributes=sa.bindparam('attrs')), changed)


def _typed(kind: str, value):
    if kind in ('int', 'decimal', 'bool') and isinstance(value, str):
        return attributes.convert(kind, value.strip())
    return value


def upgrade() -> None:
    op.add_column('campaign', sa.Column('schedule', sa.JSON(), nullable=True))
    op.add_column('campaign', sa.Column('audience', sa.JSON(), nullable=True))
    op.add_column('campaign', sa.Column('template_version', sa.Integer(), nullable=False, server_default='1'))
    op.create_index('ix_customer_email_lower', 'customer', [sa.text('lower(email)')])
    _retype_attributes(op.get_bind())


def downgrade() -> None:
    # typed attributes stay typed: templates of the older code read them as well
    op.drop_index('ix_customer_email_lower', table_name='customer')
    op.drop_column('campaign', 'template_version')
    op.drop_column('campaign', 'audience')
    op.drop_column('campaign', 'schedule')
