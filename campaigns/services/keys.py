"""API keys: random tokens shown once, stored as SHA-256 hashes.

A fast hash is right here (unlike passwords): keys are 256-bit random, so there is nothing to
brute-force, and every request must verify one cheaply.
"""

import hashlib
import secrets

from sqlalchemy import select
from sqlmodel import Session

from campaigns.models import ApiKey, Role


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, role: Role | str) -> tuple[ApiKey, str]:
    plaintext = "mab_" + secrets.token_urlsafe(32)
    row = ApiKey(name=name, role=Role(role), prefix=plaintext[:10], key_hash=hash_key(plaintext))
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate(session: Session, key: str) -> ApiKey | None:
    row = session.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).scalars().first()
    if row is None or row.revoked_at is not None:
        return None
    return row
