import csv
import io
import os
import tempfile
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Query, Request, Response, Security
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

from api.deps import Marketer, PathId, Reader, SessionDep, api_key_header, current_key
from api.idempotency import IdempotencyDep
from api.pagination import PageDep, PairPageDep, WholePageDep, link_next
from campaigns.db import session_scope
from campaigns.models import Role
from campaigns.schemas import (
    BIGINT_MAX,
    CampaignCreate,
    CampaignPublic,
    CampaignUpdate,
    PeriodPublic,
    PreviewIn,
    SnapshotPublic,
    VariantPublic,
)
from campaigns.services import campaigns, pages, periods, preview, report_store, reports

router = APIRouter(prefix="/campaigns", tags=["campaigns"])
LifecycleAction = Literal["start", "pause", "resume", "complete"]


@router.post("", status_code=201, response_model=CampaignPublic, dependencies=[Marketer])
def create_campaign(body: CampaignCreate, session: SessionDep, idem: IdempotencyDep):
    return idem.respond(campaigns.to_public(session, campaigns.create(session, body)), 201)


@router.get("", response_model=list[CampaignPublic], dependencies=[Reader])
def list_campaigns(
    request: Request, response: Response, session: SessionDep, page: PageDep,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX, description="Skip this many (prefer `cursor`).")] = 0,
):
    items, nxt = pages.campaigns(session, page.limit, page.cursor, offset)
    link_next(request, response, nxt)
    return items


@router.get("/{campaign_id}", response_model=CampaignPublic, dependencies=[Reader])
def get_campaign(campaign_id: PathId, session: SessionDep):
    return campaigns.to_public(session, campaigns.get(session, campaign_id))


@router.patch("/{campaign_id}", response_model=CampaignPublic, dependencies=[Marketer])
def update_campaign(campaign_id: PathId, body: CampaignUpdate, session: SessionDep):
    return campaigns.to_public(session, campaigns.update(session, campaign_id, body))


@router.get("/{campaign_id}/variants", response_model=list[VariantPublic], dependencies=[Reader])
def list_variants(campaign_id: PathId, request: Request, response: Response, session: SessionDep, page: WholePageDep):
    """The campaign's variants by arm; the default page is the largest (MAB_MAX_PAGE_SIZE)."""
    items, nxt = pages.variants(session, campaign_id, page.limit, page.cursor)
    link_next(request, response, nxt)
    return items


@router.post("/{campaign_id}/periods", status_code=202, response_model=PeriodPublic, dependencies=[Marketer])
def start_period(campaign_id: PathId, session: SessionDep, idem: IdempotencyDep):
    """Start the next send period now; a worker allocates, assigns, renders and delivers it."""
    return idem.respond(periods.public(session, periods.start_period(session, campaign_id)), 202)


@router.get("/{campaign_id}/periods", response_model=list[PeriodPublic], dependencies=[Reader])
def list_periods(campaign_id: PathId, request: Request, response: Response, session: SessionDep, page: PageDep):
    items, nxt = pages.periods(session, campaign_id, page.limit, page.cursor)
    link_next(request, response, nxt)
    return items


@router.get("/{campaign_id}/periods/{number}", response_model=PeriodPublic, dependencies=[Reader])
def get_period(campaign_id: PathId, number: PathId, session: SessionDep):
    return periods.public(session, periods.get_period(session, campaign_id, number))


@router.get(
    "/{campaign_id}/periods/{number}/sends.csv",
    dependencies=[Marketer],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_period(campaign_id: PathId, number: PathId, session: SessionDep):
    """The period's assignments (send id, customer, segment, arm, variant, propensity, status) as
    CSV, streamed: for sending through a CRM/ESP, or for an analyst's own checks."""
    periods.get_period(session, campaign_id, number)  # a 404 before the response starts streaming

    def lines():
        # The stream outlives the request's session, so it reads through a session of its own.
        with session_scope() as stream_session:
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(periods.EXPORT_COLUMNS)
            for i, row in enumerate(periods.export_assignments(stream_session, campaign_id, number)):
                writer.writerow(row)
                if i % 1000 == 999:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()

    return StreamingResponse(lines(), media_type="text/csv")


@router.get(
    "/{campaign_id}/periods/{number}/sends.parquet",
    dependencies=[Marketer],
    response_class=FileResponse,
    responses={200: {"content": {"application/vnd.apache.parquet": {}}}},
)
def export_period_parquet(campaign_id: PathId, number: PathId, session: SessionDep, background: BackgroundTasks):
    """The same assignments as Parquet, for loading into a CRM/ESP or a warehouse."""
    periods.get_period(session, campaign_id, number)
    tmp = tempfile.NamedTemporaryFile(suffix=".parquet", delete=False)  # noqa: SIM115 (removed after sending)
    tmp.close()
    periods.export_parquet(session, campaign_id, number, tmp.name)
    background.add_task(os.unlink, tmp.name)
    return FileResponse(tmp.name, media_type="application/vnd.apache.parquet",
                        filename=f"campaign-{campaign_id}-period-{number}.parquet")


@router.get("/{campaign_id}/allocations", response_model=list[SnapshotPublic], dependencies=[Reader])
def list_allocations(campaign_id: PathId, request: Request, response: Response, session: SessionDep, page: PairPageDep):
    """Every allocation snapshot (by period, then segment): weights, seed and the counts they were
    computed from."""
    items, nxt = pages.snapshots(session, campaign_id, page.limit, page.cursor)
    link_next(request, response, nxt)
    return items


FRESH = Query(False, description="Compute the report now rather than serve the stored one when it is behind.")
FRESHNESS_HEADERS = {"X-Report-Freshness": {"description": "current or behind (see the JSON's `freshness`)",
                                            "schema": {"type": "string"}}}


def _freshness_headers(served: report_store.Served) -> dict[str, str]:
    return {"X-Report-Freshness": served.freshness["state"], "X-Report-Computed-At": served.freshness["computed_at"]}


@router.get("/{campaign_id}/report", dependencies=[Reader], response_class=Response,
            responses={200: {"content": {"application/json": {"schema": {"type": "object"}}},
                             "headers": FRESHNESS_HEADERS}})
def lift_report(campaign_id: PathId, fresh: bool = FRESH):
    """Lift against the holdout, leaderboard, factor effects, allocation over time, learning curve,
    off-policy estimates and health checks (see the `methods` field), from one consistent snapshot.
    Served as stored by the workers; `freshness` says whether newer data has arrived since."""
    served = report_store.read(campaign_id, fresh)
    return Response(served.body, media_type="application/json", headers=_freshness_headers(served))


@router.get(
    "/{campaign_id}/report.csv",
    dependencies=[Reader],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "headers": FRESHNESS_HEADERS}},
)
def lift_report_csv(campaign_id: PathId, fresh: bool = FRESH):
    """The report as tidy CSV: one row per segment × arm × metric (and the control and the bandit)."""
    served = report_store.read(campaign_id, fresh)  # a 404 before streaming
    report = served.as_dict()

    def lines():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(reports.CSV_COLUMNS)
        for i, row in enumerate(reports.csv_rows(report)):
            writer.writerow(["" if v is None else v for v in row])
            if i % 1000 == 999:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    headers = {"Content-Disposition": f'attachment; filename="campaign-{campaign_id}-report.csv"',
               **_freshness_headers(served)}
    return StreamingResponse(lines(), media_type="text/csv", headers=headers)


@router.get("/{campaign_id}/report.html", dependencies=[Reader], response_class=HTMLResponse,
            responses={200: {"headers": FRESHNESS_HEADERS}})
def lift_report_html(campaign_id: PathId, fresh: bool = FRESH):
    """The report as a self-contained HTML page with inline SVG charts (no external scripts)."""
    served = report_store.read(campaign_id, fresh)
    return HTMLResponse(reports.render_html(served.as_dict()), headers=_freshness_headers(served))


@router.get("/{campaign_id}/audience", dependencies=[Reader])
def audience(campaign_id: PathId, session: SessionDep) -> dict:
    """How many customers the campaign would mail now, per segment (active, consenting, in its
    segments and its audience filter; before the holdout and the frequency cap)."""
    return campaigns.audience_reach(session, campaign_id)


@router.get("/{campaign_id}/check", dependencies=[Reader])
def check(campaign_id: PathId, session: SessionDep) -> dict:
    """The pre-start check, any time (a dry run: nothing is written or sent): every template part
    rendered for a sample of the real targeted customers; `problems` names each missing or mistyped
    attribute with how many sampled customers it fails for and example ids."""
    return campaigns.dry_run(session, campaign_id)


@router.post("/{campaign_id}/preview", dependencies=[Reader])
def preview_email(campaign_id: PathId, body: PreviewIn, session: SessionDep) -> dict:
    """The email one customer would receive for one variant: subject, text, HTML, headers (and a
    short-lived signed link to see it in a browser)."""
    result = preview.preview(session, campaign_id, body.customer, body.variant)
    variant = body.variant if not isinstance(body.variant, dict) else ",".join(
        f"{k}:{v}" for k, v in body.variant.items())
    link = preview.signed_link(campaign_id, body.customer, str(variant))
    result["html_url"] = (f"/campaigns/{campaign_id}/preview.html?{urlencode({'customer': body.customer})}"
                          f"&{urlencode({'variant': str(variant)})}&expires={link['expires']}&sig={link['sig']}")
    return result


def preview_access(request: Request, session: SessionDep,
                   key: Annotated[str | None, Security(api_key_header)] = None) -> None:
    """The browser preview's way in: the signed link of `POST …/preview`, or a reader's API key."""
    q = request.query_params
    if "sig" in q:
        try:
            expires = int(q.get("expires", ""))
        except ValueError:
            expires = 0
        try:
            campaign_id = int(request.path_params["campaign_id"])
        except ValueError:
            return  # not an id: the path's own validation refuses the request (422) before anything is read
        preview.check_link(campaign_id, q.get("customer", ""), q.get("variant", ""), expires, q["sig"])
        return
    row = current_key(session, key, request)
    if row.role not in (Role.ADMIN, Role.MARKETER, Role.ANALYST):
        raise HTTPException(403, f"role '{row.role}' may not do this (allowed: admin, analyst, marketer)")


@router.get("/{campaign_id}/preview.html", response_class=HTMLResponse, dependencies=[Depends(preview_access)])
def preview_html(
    campaign_id: PathId, session: SessionDep,
    customer: Annotated[str, Query(min_length=1, max_length=200)],
    variant: Annotated[str, Query(min_length=1, max_length=2000, description="arm, control, or factor:level,…")],
    expires: Annotated[int | None, Query(ge=0, le=BIGINT_MAX, description="Of a signed link.")] = None,
    sig: Annotated[str | None, Query(max_length=64, description="Of a signed link.")] = None,
):
    """The preview as a browser shows it: with the X-API-Key header, or through the signed link
    that `POST …/preview` returns (valid 15 minutes, for that customer and variant only)."""
    result = preview.preview(session, campaign_id, customer, preview.parse_variant(variant))
    return HTMLResponse(result["html"], headers={"Content-Security-Policy": "default-src 'none'; img-src * data:; "
                                                 "style-src 'unsafe-inline'"})


# Registered last: its path would otherwise shadow POST /{campaign_id}/periods.
@router.post("/{campaign_id}/{action}", response_model=CampaignPublic, dependencies=[Marketer])
def lifecycle(
    campaign_id: PathId, action: LifecycleAction, session: SessionDep,
    send_now: Annotated[bool, Query(description="start: send the first period now instead of at the "
                                    "schedule's next slot (a manual campaign's only way but POST …/periods)")] = False,
):
    return campaigns.to_public(session, campaigns.act(session, campaign_id, action, send_now))
