"""Engine, sessions, and the one place a unit of work commits.

Services only `flush()`. The API commits in its request dependency, tasks and the CLI in
`session_scope()`. Work that must happen only once the data is durable (enqueueing a Celery task)
is registered with `on_commit` and runs after the commit, never before.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, create_engine

from campaigns.settings import get_settings

_AFTER_COMMIT = "after_commit_callbacks"
log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A worker and the API write the same file: WAL lets readers run beside the writer, and the
        # busy timeout makes a writer wait for the lock instead of failing.
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    # hide_parameters: SQL errors never carry customer data into logs. connect_timeout: an
    # unreachable database makes /ready answer 503 in seconds instead of hanging.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True,
                         connect_args={"connect_timeout": 5})


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url())


def reset_engine() -> None:
    """Forget the cached engine (tests and `mab up` point the process at another database)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session):
    """Run what waited for the commit. The data is durable by now, so a step that fails cannot undo
    it and must not break the session: it is logged, and the work it was to start is found again
    from the database (services/sweeper.py)."""
    for callback in session.info.pop(_AFTER_COMMIT, []):
        try:
            callback()
        except Exception:
            log.exception("a step after the commit failed: %r", callback)


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session):
    session.info.pop(_AFTER_COMMIT, None)


@contextmanager
def _committed(session: Session) -> Iterator[Session]:
    """Commit what is left when the block ends; roll back when it raises."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


@contextmanager
def session_scope() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session, _committed(session):
        yield session


@contextmanager
def pinned_session_scope() -> Iterator[Session]:
    """`session_scope` for work that commits several times on one connection: a `session_scope`
    session may take another pooled connection after each commit, and a temporary table (the plan's
    frequency-cap table) exists only on the connection that created it. The caller commits its
    steps; what is left commits on exit."""
    with get_engine().connect() as conn, Session(bind=conn, expire_on_commit=False) as session, _committed(session):
        yield session


@contextmanager
def snapshot_scope() -> Iterator[Session]:
    """A read-only unit of work that sees one consistent state of the database across all its
    queries (a report must not count events whose sends it has not counted yet): REPEATABLE READ on
    PostgreSQL; on SQLite an explicit BEGIN, since the driver would otherwise run every SELECT in
    a snapshot of its own. Nothing is ever committed."""
    with get_engine().connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn.exec_driver_sql("BEGIN")
        with Session(bind=conn, expire_on_commit=False) as session:
            try:
                yield session
            finally:
                session.rollback()
                conn.rollback()


def is_postgres(session: Session) -> bool:
    """Bulk paths differ by backend (COPY, arrays on PostgreSQL; executemany on SQLite)."""
    return session.get_bind().dialect.name == "postgresql"


def dialect_insert(session: Session):
    """The INSERT construct with ON CONFLICT support for the session's database."""
    return postgresql.insert if is_postgres(session) else sqlite.insert


def insert_ignoring_conflicts(session: Session, table, conflict_cols: list[str]):
    """INSERT … ON CONFLICT DO NOTHING, to execute with a list of rows.

    Executed as `session.execute(stmt, rows)` the statement is compiled once and run as an
    executemany; building `.values(rows)` instead recompiled a statement with a bind parameter per
    cell, which cost more than the database's own work. On PostgreSQL the executemany is still one
    INSERT per row (benchmarks/README.md: ~0.05 of COPY); COPY into a staging table is the next step.
    Add `.returning()` to learn which rows were new.
    """
    return dialect_insert(session)(table).on_conflict_do_nothing(index_elements=conflict_cols)


def upsert(session: Session, table, conflict_cols: list[str], set_):
    """INSERT … ON CONFLICT DO UPDATE, to execute with a list of rows. `set_` lists the columns to
    overwrite from the new row, or maps columns to expressions (`stmt.excluded` is passed in)."""
    stmt = dialect_insert(session)(table)
    values = set_(stmt.excluded) if callable(set_) else {c: stmt.excluded[c] for c in set_}
    return stmt.on_conflict_do_update(index_elements=conflict_cols, set_=values)
