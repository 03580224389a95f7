"""Request dependencies: one session per request (committed here, nowhere else) and API keys."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Security
from fastapi.security import APIKeyHeader
from sqlmodel import Session

from campaigns.db import session_scope
from campaigns.models import ApiKey, Role
from campaigns.services import keys


def get_session() -> Iterator[Session]:
    """The request's unit of work: committed after the route returns, rolled back if it raises."""
    with session_scope() as session:
        yield session


# scope="function": the commit happens before the response is sent. A client that got 201/202 can
# read what it wrote at once, and a failed commit is an error response, never a false success.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from `mab create-key`.")


def current_key(session: SessionDep, key: Annotated[str | None, Security(api_key_header)]) -> ApiKey:
    if not key:
        raise HTTPException(401, "missing API key (send it in the X-API-Key header)")
    row = keys.authenticate(session, key)
    if row is None:
        raise HTTPException(401, "invalid or revoked API key")
    return row


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require(*roles: Role):
    """A dependency that admits admins and the given roles, and answers 403 to everyone else."""

    def check(key: CurrentKey) -> ApiKey:
        if key.role != Role.ADMIN and key.role not in roles:
            allowed = ", ".join(sorted({Role.ADMIN, *roles}))
            raise HTTPException(403, f"role '{key.role}' may not do this (allowed: {allowed})")
        return key

    return Depends(check)


Marketer = require(Role.MARKETER)
Analyst = require(Role.ANALYST)
Reader = require(Role.MARKETER, Role.ANALYST)
Ingest = require(Role.INGEST)
Admin = require()
