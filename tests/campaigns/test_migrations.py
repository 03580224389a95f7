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


def test_0011_marks_what_was_planned_before_it_and_downgrades(database_url, redis_server):
    """Before 0011 a plan was one transaction: a stored snapshot means its segment was claimed, and
    a period with chunks (or completed) was fully planned. The upgrade records exactly that."""
    from sqlalchemy import text

    from alembic import command
    from campaigns.db import reset_engine
    from campaigns.migrate import alembic_config
    from campaigns.models import AllocationSnapshot, SendPeriod
    from campaigns.services import periods
    from tests.campaigns.test_periods import new_period, setup_campaign

    cid = setup_campaign(20)
    assert periods.run_period(new_period(cid)) == "completed"  # period 1, with its snapshots
    reset_engine()
    command.downgrade(alembic_config(database_url), "0010")
    with get_engine().begin() as conn:
        for number, status, chunks in ((2, "completed", 0), (3, "running", 4), (4, "queued", 0)):
            conn.execute(text("INSERT INTO send_period (campaign_id, number, status, seed, total, sent, failed, "
                              "chunks, created_at, started_at) VALUES (:c, :n, :s, 1, 0, 0, 0, :k, :t, :t)"),
                         {"c": cid, "n": number, "s": status, "k": chunks, "t": "2026-11-20 10:00:00.000000"})
    command.upgrade(alembic_config(database_url), "head")
    reset_engine()
    with session_scope() as s:
        planned = {p.number: p.planned_at is not None for p in s.execute(select(SendPeriod)).scalars()}
        snapshots = list(s.execute(select(AllocationSnapshot)).scalars())
    assert planned == {1: True, 2: True, 3: True, 4: False}
    assert snapshots and all(snap.claimed_at == snap.created_at for snap in snapshots)
