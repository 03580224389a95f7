"""Queries of the idempotency_key table (see campaigns/services/idempotency.py for the protocol)."""

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlmodel import Session

from campaigns.db import dialect_insert, is_postgres
from campaigns.models import IdempotencyKey

IN_PROGRESS = "in_progress"
COMPLETED = "completed"


def claim(session: Session, api_key_id: int, key: str, request_hash: str, now: datetime) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING: the new row's id, or None when the key is taken. While another
    transaction holds an uncommitted row with the same key, this waits for it to commit or roll back
    (PostgreSQL: the unique index; SQLite: the single writer lock)."""
    stmt = (
        dialect_insert(session)(IdempotencyKey)
        .values(api_key_id=api_key_id, key=key, request_hash=request_hash, status=IN_PROGRESS, created_at=now)
        .on_conflict_do_nothing(index_elements=["api_key_id", "key"])
        .returning(IdempotencyKey.id)
    )
    return session.execute(stmt).scalar_one_or_none()


def find(session: Session, api_key_id: int, key: str) -> IdempotencyKey | None:
    stmt = select(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.key == key)
    return session.execute(stmt.execution_options(populate_existing=True)).scalars().first()


def delete_if_expired(session: Session, row_id: int, cutoff: datetime) -> None:
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id, IdempotencyKey.created_at < cutoff))


def complete(session: Session, row_id: int, status: int, body: str, headers: dict[str, str]) -> None:
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == row_id)
        .values(status=COMPLETED, response_status=status, response_body=body, response_headers=headers)
    )


def purge_expired(session: Session, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` rows older than `cutoff`. On PostgreSQL rows another transaction holds are
    skipped, so a purge never waits behind a request."""
    ids = select(IdempotencyKey.id).where(IdempotencyKey.created_at < cutoff).order_by(IdempotencyKey.id).limit(batch)
    if is_postgres(session):
        ids = ids.with_for_update(skip_locked=True)
    result = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids.scalar_subquery())),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount or 0
