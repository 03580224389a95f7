from fastapi import APIRouter

from api.deps import Admin, SessionDep
from campaigns.schemas import ApiKeyCreate, ApiKeyCreated
from campaigns.services import keys

router = APIRouter(prefix="/api-keys", tags=["admin"])


@router.post("", status_code=201, response_model=ApiKeyCreated, dependencies=[Admin])
def create_api_key(body: ApiKeyCreate, session: SessionDep):
    row, plaintext = keys.create_key(session, body.name, body.role)
    return ApiKeyCreated(id=row.id, name=row.name, role=row.role, key=plaintext)
