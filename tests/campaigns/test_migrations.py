"""Alembic owns the schema: after `upgrade head` the database matches the SQLModel tables exactly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select
from sqlmodel import SQLModel

import campaigns.models  # noqa: F401
from campaigns.db import get_engine, session_scope
from campaigns.models import Segment
from campaigns.services.segments import RFM_SEGMENTS


def test_models_and_migrations_agree(database_url):
    with get_engine().connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == []


def test_migration_seeds_the_eight_rfm_segments(database_url):
    with session_scope() as s:
        names = set(s.execute(select(Segment.name)).scalars())
        assert s.execute(select(func.count()).select_from(Segment)).scalar_one() == 8
    assert names == {name for name, _ in RFM_SEGMENTS.values()}
