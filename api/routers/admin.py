from fastapi import APIRouter, Request, Response

from api.deps import Admin, PathId, SessionDep
from api.pagination import PageDep, link_next
from campaigns.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from campaigns.services import keys

router = APIRouter(prefix="/api-keys", tags=["admin"])


@router.post("", status_code=201, response_model=ApiKeyCreated, dependencies=[Admin])
def create_api_key(body: ApiKeyCreate, session: SessionDep):
    row, plaintext = keys.create_key(session, body.name, body.role)
    return ApiKeyCreated(id=row.id, name=row.name, role=row.role, key=plaintext)


@router.get("", response_model=list[ApiKeyPublic], dependencies=[Admin])
def list_api_keys(request: Request, response: Response, session: SessionDep, page: PageDep):
    """Every key (id order) with its name, role, prefix and revocation time; never a hash."""
    items, nxt = keys.list_keys(session, page.cursor, page.limit)
    link_next(request, response, nxt)
    return items


@router.post("/{key_id}/revoke", response_model=ApiKeyPublic, dependencies=[Admin])
def revoke_api_key(key_id: PathId, session: SessionDep):
    """Every later request with the key is refused (401). Rotation: create the new key, switch the
    client over, then revoke the old one. Revoking twice changes nothing; the last active admin
    key cannot be revoked (409)."""
    return keys.public(keys.revoke_key(session, key_id))
