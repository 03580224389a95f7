"""Model versions: promote a variant, roll back to an earlier snapshot or uniform, resume learning —
per segment of a campaign (or `all` of them), each recorded with who and why."""

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from api.deps import Marketer, PathId, Reader, SessionDep
from api.pagination import PageDep, link_next
from campaigns.models import ApiKey
from campaigns.schemas import ModelActionPublic, PromoteIn, ResumeIn, RollbackIn, VersionsPublic
from campaigns.services import pages, versions

router = APIRouter(prefix="/campaigns/{campaign_id}", tags=["model versions"])

Actor = Annotated[ApiKey, Marketer]  # who acted: recorded with the action
SegmentName = Annotated[str, Path(
    description="A segment's name, or `all` for every segment of the campaign (one action recorded per segment).")]


@router.post("/segments/{segment}/promote", status_code=201, response_model=list[ModelActionPublic])
def promote(campaign_id: PathId, segment: SegmentName, body: PromoteIn, session: SessionDep, actor: Actor):
    """From the next period on, the segment's non-holdout customers all get this variant (weight 1.0);
    the holdout keeps its share. Refused (422) for an arm that does not exist or is excluded there."""
    return versions.promote(session, campaign_id, segment, body, actor)


@router.post("/segments/{segment}/rollback", status_code=201, response_model=list[ModelActionPublic])
def rollback(campaign_id: PathId, segment: SegmentName, body: RollbackIn, session: SessionDep, actor: Actor):
    """Pin the segment's weights to those stored in period `to_period`'s allocation snapshot, or
    `"to": "uniform"` for equal weights over its eligible variants, from the next period on."""
    return versions.rollback(session, campaign_id, segment, body, actor)


@router.post("/segments/{segment}/resume", status_code=201, response_model=list[ModelActionPublic])
def resume(campaign_id: PathId, segment: SegmentName, body: ResumeIn, session: SessionDep, actor: Actor):
    """Back to the bandit's own allocation from the next period on."""
    return versions.resume(session, campaign_id, segment, body.reason, actor)


@router.get("/versions", response_model=VersionsPublic, dependencies=[Reader])
def list_versions(campaign_id: PathId, request: Request, response: Response, session: SessionDep, page: PageDep):
    """Every model action (time, who, role, action, segment, detail, reason), oldest first, and each
    segment's current mode: learning, promoted (an arm), pinned (to a period) or uniform. The
    timeline is paginated (`limit`, `cursor`, X-Next-Cursor); the segments' modes are always whole."""
    body, nxt = pages.versions(session, campaign_id, page.limit, page.cursor)
    link_next(request, response, nxt)
    return body

