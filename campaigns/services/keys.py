"""API keys: random tokens shown once, stored as SHA-256 hashes.

A fast hash is right here (unlike passwords): keys are 256-bit random, so there is nothing to
brute-force, and every request must verify one cheaply.
"""

import hashlib
import secrets

from sqlmodel import Session

from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.models import ApiKey, Role, utcnow
from campaigns.repositories import keys as repo
from campaigns.schemas import INT_MAX


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, role: Role | str) -> tuple[ApiKey, str]:
    plaintext = "mab_" + secrets.token_urlsafe(32)
    row = ApiKey(name=name, role=Role(role), prefix=plaintext[:10], key_hash=hash_key(plaintext))
    session.add(row)
    session.flush()
    return row, plaintext


def lookup(session: Session, key: str) -> ApiKey | None:
    """The key's row, revoked or not (the audit log names a revoked key that is still being used)."""
    return repo.by_hash(session, hash_key(key))


def authenticate(session: Session, key: str) -> ApiKey | None:
    row = lookup(session, key)
    if row is None or row.revoked_at is not None:
        return None
    return row


def public(row: ApiKey) -> dict:
    """What may be shown of a key: never its hash (nor, since it is never stored, the key itself).
    The prefix (`mab_` and 6 characters) tells an operator which key they hold."""
    return {"id": row.id, "name": row.name, "role": row.role, "prefix": row.prefix,
            "created_at": row.created_at, "revoked_at": row.revoked_at}


def list_keys(session: Session, cursor: str | None, limit: int) -> tuple[list[dict], str | None]:
    """A page of keys in id order, and the cursor of the next page (None: this was the last)."""
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise InvalidInput("cursor", "not a cursor of this list (use the X-Next-Cursor of the previous page)")
    rows = repo.page(session, min(int(cursor or 0), INT_MAX), limit + 1)  # INTEGER ids: clamp, never overflow
    return [public(r) for r in rows[:limit]], (str(rows[limit - 1].id) if len(rows) > limit else None)


def revoke_key(session: Session, key_id: int) -> ApiKey:
    """Revoke a key for good: every later request with it is 401. Revoking a revoked key changes
    nothing (its first revocation time stays). The last active admin key cannot be revoked, so the
    API never locks out its administrators (create the next admin key first: rotation)."""
    row = repo.get(session, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    if row.role == Role.ADMIN:
        # Lock every active admin key (in id order, this one among them) before deciding: two
        # revocations at once then wait for each other, and cannot both take the last two.
        active = [a.id for a in repo.lock_active_admins(session)]
        if active == [key_id]:
            raise Conflict(f"API key {key_id} is the last active admin key: create another admin key first")
        if key_id not in active:
            session.refresh(row)  # revoked meanwhile: keep its first revocation time
    else:
        repo.get_for_update(session, key_id)  # refreshes `row` (populate_existing) under the lock
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
