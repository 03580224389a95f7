"""Queries over the audit log."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from campaigns.models import AuditLog


def insert(session: Session, row: AuditLog) -> None:
    session.add(row)
    session.flush()


@dataclass(frozen=True)
class Filters:
    key_id: int | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: int | None = None
    outcome: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def page(session: Session, f: Filters, before_id: int | None, limit: int) -> list[AuditLog]:
    """Newest first, keyset-paged by id (a page costs the same however deep it is)."""
    stmt = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
    if f.key_id is not None:
        stmt = stmt.where(AuditLog.key_id == f.key_id)
    if f.action is not None:
        stmt = stmt.where(AuditLog.action == f.action)
    if f.object_type is not None:
        stmt = stmt.where(AuditLog.object_type == f.object_type)
    if f.object_id is not None:
        stmt = stmt.where(AuditLog.object_id == f.object_id)
    if f.outcome is not None:
        stmt = stmt.where(AuditLog.outcome == f.outcome)
    if f.since is not None:
        stmt = stmt.where(AuditLog.created_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditLog.created_at < f.until)
    if before_id is not None:
        stmt = stmt.where(AuditLog.id < before_id)
    return list(session.execute(stmt).scalars())
