"""Queries over API keys."""

from sqlalchemy import select
from sqlmodel import Session

from campaigns.models import ApiKey, Role


def by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash)).scalars().first()


def get(session: Session, key_id: int) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def get_for_update(session: Session, key_id: int) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.id == key_id).with_for_update().execution_options(populate_existing=True)
    return session.execute(stmt).scalars().first()


def lock_active_admins(session: Session) -> list[ApiKey]:
    """Every active admin key, row-locked in id order (there are few): two revocations at once wait
    for each other instead of both taking the last two admin keys, and never deadlock."""
    stmt = (select(ApiKey).where(ApiKey.role == Role.ADMIN, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.id).with_for_update().execution_options(populate_existing=True))
    return list(session.execute(stmt).scalars())


def page(session: Session, after_id: int, limit: int) -> list[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.id > after_id).order_by(ApiKey.id).limit(limit)
    return list(session.execute(stmt).scalars())
