"""The audit log, for admins: who called what, on which object, with what outcome."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from api.deps import Admin, SessionDep
from api.pagination import PageDep, link_next
from campaigns.repositories.audit import Filters
from campaigns.schemas import AuditEntryPublic, IsoDatetime
from campaigns.services import audit

router = APIRouter(tags=["admin"])


@router.get("/audit", response_model=list[AuditEntryPublic], dependencies=[Admin])
def audit_log(
    request: Request,
    response: Response,
    session: SessionDep,
    page: PageDep,
    key_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Calls made with this API key.")] = None,
    action: Annotated[str | None, Query(max_length=300, description='"POST /campaigns/{campaign_id}/start"')] = None,
    object_type: Annotated[str | None, Query(max_length=64, description="campaign, api_key, customer …")] = None,
    object_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    outcome: Annotated[Literal["success", "refused"] | None, Query()] = None,
    since: Annotated[IsoDatetime | None, Query(description="From this time on (inclusive; no offset: UTC).")] = None,
    until: Annotated[IsoDatetime | None, Query(description="Before this time (exclusive).")] = None,
):
    """Entries newest first: successful mutating calls, reads of a customer's personal data, and
    refusals (403, revoked keys). Paged: the next page's cursor is in `X-Next-Cursor`."""
    filters = Filters(key_id=key_id, action=action, object_type=object_type, object_id=object_id, outcome=outcome,
                      since=since, until=until)
    items, nxt = audit.entries(session, filters, page.limit, page.cursor)
    link_next(request, response, nxt)
    return items
