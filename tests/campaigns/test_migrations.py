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


def test_0013_types_the_text_attributes_of_earlier_imports(database_url):
    """Before 0013 every CSV attribute was text: each attribute is re-typed as a CSV import types it
    now, across all rows (one non-number keeps the whole attribute text), and empty text is dropped."""
    import json

    from sqlalchemy import text

    from alembic import command
    from campaigns.db import reset_engine
    from campaigns.migrate import alembic_config
    from campaigns.models import Customer

    reset_engine()
    command.downgrade(alembic_config(database_url), "0012")
    rows = [
        ("a", {"points": "1200", "score": "1.5", "vip": "true", "since": "2024-03-01", "zip": "01234", "city": ""}),
        ("b", {"points": "80", "score": "2", "vip": "no", "since": "2025-12-31", "zip": "75001", "city": "Lyon"}),
        ("c", {"points": "7", "score": "n/a", "vip": "yes", "since": "2025-02-30"}),
    ]
    with get_engine().begin() as conn:
        for ext, attrs in rows:
            conn.execute(text("INSERT INTO customer (external_id, email, attributes, status, consent, created_at, "
                              "updated_at) VALUES (:e, :m, :a, 'active', TRUE, :t, :t)"),
                         {"e": ext, "m": f"{ext}@example.com", "a": json.dumps(attrs), "t": "2026-11-20 10:00:00"})
    command.upgrade(alembic_config(database_url), "head")
    reset_engine()
    with session_scope() as s:
        got = {c.external_id: c.attributes for c in s.execute(select(Customer)).scalars()}
    assert got["a"] == {"points": 1200, "score": "1.5", "vip": True, "since": "2024-03-01", "zip": "01234"}
    assert got["b"] == {"points": 80, "score": "2", "vip": False, "since": "2025-12-31", "zip": "75001",
                        "city": "Lyon"}
    assert got["c"]["points"] == 7 and got["c"]["since"] == "2025-02-30"  # not a real date: the column is text
    assert isinstance(got["a"]["points"], int) and isinstance(got["b"]["vip"], bool)
