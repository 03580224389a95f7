"""Operations: liveness, readiness and Prometheus metrics. No API key (see `metrics_access`)."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Security
from fastapi.responses import JSONResponse, Response

from api.deps import api_key_header, current_key
from campaigns import metrics
from campaigns.db import session_scope
from campaigns.models import Role
from campaigns.services import health
from campaigns.settings import get_settings

router = APIRouter(tags=["ops"])


@router.get("/health")
def live() -> dict:
    """Liveness: the process answers. Checks nothing else, so a database or broker outage never
    gets healthy API processes restarted; GET /ready says whether they can work."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "A check failed; `detail` says which and why."}})
def ready():
    """Readiness: the database answers, its schema is at this code's newest migration, and the
    Redis broker answers. 503 names the failed check and the reason."""
    ok, checks = health.readiness()
    if ok:
        return {"status": "ready", "checks": checks}
    return JSONResponse({"error": "not_ready", "detail": checks}, status_code=503)


def metrics_access(key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Open by default (Prometheus scrapers send no key); MAB_METRICS_REQUIRE_KEY=true: admins only."""
    if not get_settings().metrics_require_key:
        return
    with session_scope() as session:
        row = current_key(session, key)
    if row.role != Role.ADMIN:
        raise HTTPException(403, f"role '{row.role}' may not do this (allowed: admin)")


@router.get("/metrics", response_class=Response, dependencies=[Depends(metrics_access)],
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
            openapi_extra={"security": [{}]})  # appended to the key's requirement: the key is optional
def scrape():
    """Prometheus metrics of every API and worker process on this host (multiprocess mode), plus
    queue depth and allocation entropy read at scrape time."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
