"""Idempotency keys: the same `Idempotency-Key` and the same request from one API key within
MAB_IDEMPOTENCY_TTL_HOURS get the first response again, and the work is done once.

The protocol lives inside the request's own transaction:

1. `begin` inserts (api key, key, request hash) with ON CONFLICT DO NOTHING before the work. A
   concurrent request with the same key blocks on that insert (PostgreSQL's unique index, SQLite's
   writer lock) until the first one's transaction ends: committed, it finds the row and replays it;
   rolled back, its insert goes through and it does the work itself. So two requests never both
   execute, and the second one never sees an "in progress" row.
2. `record` writes the response into the row, still before the commit, so the work and its recorded
   response commit together or not at all. An error response (a rolled-back request) records
   nothing: the key stays free, and a retry executes.
"""

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session

from campaigns.errors import Conflict, InvalidInput
from campaigns.models import utcnow
from campaigns.repositories import idempotency as repo
from campaigns.settings import get_settings

HEADER = "Idempotency-Key"
LOC = f"header.{HEADER}"
MAX_KEY_LENGTH = 255
PURGE_BATCH = 5_000


@dataclass(frozen=True)
class Claimed:
    row_id: int


@dataclass(frozen=True)
class Stored:
    """The first response, to replay (a plain value: it outlives the rolled-back session)."""

    status: int
    body: str
    headers: dict[str, str]


def check_key(key: str) -> str:
    """1–255 printable ASCII characters (a UUID is a good key)."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidInput(LOC, f"an idempotency key has 1 to {MAX_KEY_LENGTH} characters (got {len(key)})")
    if any(not " " <= ch <= "~" for ch in key):
        raise InvalidInput(LOC, "an idempotency key has only printable ASCII characters")
    return key


def request_hasher(method: str, path: str, query: str = ""):
    """A sha256 over method, path (and query) so far; the caller feeds it the raw body."""
    h = hashlib.sha256()
    h.update(f"{method.upper()} {path}?{query}\n".encode())
    return h


def _cutoff():
    return utcnow() - timedelta(hours=get_settings().idempotency_ttl_hours)


def begin(session: Session, api_key_id: int, key: str, request_hash: str) -> Claimed | Stored:
    """Claim the key for this request, or return the stored row whose response is to be replayed.
    Raises InvalidInput when the key was used for another request."""
    cutoff = _cutoff()
    for _ in range(3):
        row_id = repo.claim(session, api_key_id, key, request_hash, utcnow())
        if row_id is not None:
            return Claimed(row_id)
        row = repo.find(session, api_key_id, key)
        if row is None:  # purged between the two statements: claim again
            continue
        if row.created_at < cutoff:  # older than the TTL: forgotten, the key is free again
            repo.delete_if_expired(session, row.id, cutoff)
            continue
        if row.request_hash != request_hash:
            hours = get_settings().idempotency_ttl_hours
            raise InvalidInput(LOC, f"this {HEADER} was already used for a different request (method, path or "
                               f"body) within the last {hours:g} hours: use a new key for a new request")
        if row.status != repo.COMPLETED:
            # Unreachable through the API (a row commits only with its response); kept as a guard.
            raise Conflict(f"a request with this {HEADER} is still in progress: retry later")
        return Stored(row.response_status, row.response_body or "", dict(row.response_headers or {}))
    raise Conflict(f"this {HEADER} is being reused concurrently: retry")


def record(session: Session, claimed: Claimed, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Store the response in the claimed row, in the transaction of the work."""
    repo.complete(session, claimed.row_id, status, body.decode(), headers)


def purge_expired(session: Session) -> int:
    """Delete keys older than the TTL (at most PURGE_BATCH per call)."""
    return repo.purge_expired(session, _cutoff(), PURGE_BATCH)
