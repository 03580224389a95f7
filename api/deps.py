"""Request dependencies: one session per request (committed here, nowhere else), API keys, and the
audit log of every call made with a key."""

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaigns.db import session_scope
from campaigns.errors import InvalidInput
from campaigns.models import ApiKey, Role
from campaigns.schemas import INT_MAX
from campaigns.services import audit, keys


def get_session() -> Iterator[Session]:
    """The request's unit of work: committed after the route returns, rolled back if it raises."""
    with session_scope() as session:
        yield session


# scope="function": the commit happens before the response is sent. A client that got 201/202 can
# read what it wrote at once, and a failed commit is an error response, never a false success.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from `mab create-key`.")


def current_key(
    session: SessionDep, key: Annotated[str | None, Security(api_key_header)], request: Request = None
) -> ApiKey:
    if not key:
        raise HTTPException(401, "missing API key (send it in the X-API-Key header)")
    row = keys.lookup(session, key)
    if row is None or row.revoked_at is not None:
        if row is not None and request is not None:
            request.state.revoked_key = row  # a revoked key still in use: the audit log names it
        raise HTTPException(401, "invalid or revoked API key")
    if request is not None:
        request.state.api_key = row
    return row


CurrentKey = Annotated[ApiKey, Depends(current_key)]

# An id in a path: within its INTEGER column's range (past it, PostgreSQL or the driver overflows: a 500).
PathId = Annotated[int, Path(ge=1, le=INT_MAX)]


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


def audit_call(request: Request, session: SessionDep) -> Iterator[None]:
    """Audits every call of the app (an app-wide dependency, so a new router cannot forget it).

    It wraps the route and the key checks, inside the request's unit of work: a success is written
    with the work, in its transaction, after the route returned (`scope="function"`, like the
    session: before the commit); a 401/403 of a known key is written in a transaction of its own.
    Calls without a key (health, tracking links, the signed webhook) are never written. Why a
    dependency and not a middleware: a middleware learns the status only after the commit, so its
    write could neither roll back with the work nor be refused with it."""
    route = request.scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", "")
    method = request.method
    wanted = audit.audits_success(method, template)
    if wanted:
        audit.watch_creations(session)
    try:
        yield
    except StarletteHTTPException as exc:
        key = getattr(request.state, "api_key", None) or getattr(request.state, "revoked_key", None)
        if exc.status_code in (401, 403) and key is not None:
            audit.record_refusal(key, _call(request, method, template), exc.status_code, str(exc.detail))
        raise
    key = getattr(request.state, "api_key", None)
    if wanted and key is not None:
        status = getattr(route, "status_code", None) or 200
        override = getattr(request.state, "audit_object", None)  # set by a route whose path id changes
        audit.record_success(session, key, _call(request, method, template), status, override)


def _call(request: Request, method: str, template: str) -> audit.Call:
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    return audit.Call(method, template, dict(request.path_params), request_id)


Audited = Depends(audit_call, scope="function")


def refuse_nul(request: Request) -> None:
    """PostgreSQL text cannot hold a NUL character: one in a path or query parameter is bad input
    (a 422), not a database error (a 500). Bodies are checked by their models (campaigns/schemas.py)."""
    for where, items in (("path", request.path_params.items()), ("query", request.query_params.multi_items())):
        for name, value in items:
            if "\x00" in name or "\x00" in str(value):
                raise InvalidInput(f"{where}.{name}", "must not contain NUL (\\u0000) characters")


NoNul = Depends(refuse_nul)
