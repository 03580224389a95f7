"""Links inside emails: signed click tracking and one-click unsubscribe (RFC 8058)."""

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from api.deps import SessionDep
from campaigns.schemas import USER_AGENT_MAX
from campaigns.services import tracking

router = APIRouter(tags=["tracking"], include_in_schema=True)


async def click(token: str, request: Request) -> RedirectResponse:
    """Record a click and redirect to the campaign's own landing page (never a URL from the request).
    The click keeps its time, user agent and link number: the worker judges scanners and bots by them."""
    agent = request.headers.get("user-agent", "")[:USER_AGENT_MAX] or None
    return RedirectResponse(await tracking.click(token, agent), status_code=307)


def add_click_route(app: FastAPI) -> None:
    """The click redirect is the one route outside the app's own dependencies (api/deps.py: the
    audit log and the NUL check). It runs once per click, hundreds per second when a newsletter
    lands, and those open a database session and take three thread hops per request; it carries no
    API key, so there is nothing to audit, and a token with a NUL fails verification (404). Being a
    plain APIRoute on the app's router, it is in the OpenAPI document like every other route."""
    app.router.routes.append(APIRoute(
        "/t/{token}", click, methods=["GET"], status_code=307, response_class=RedirectResponse,
        tags=["tracking"], summary="Click", responses={404: {"description": "unknown or invalid link"}},
    ))


@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, session: SessionDep):
    """Shows a confirmation form; a GET never unsubscribes (mail scanners follow links)."""
    tracking.unsubscribe_send(session, token, apply=False)
    return HTMLResponse(tracking.confirm_page(token))


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, session: SessionDep):
    """RFC 8058 one-click: a POST with List-Unsubscribe=One-Click; repeating it is harmless."""
    tracking.unsubscribe_send(session, token, apply=True)
    return HTMLResponse("<!doctype html><title>Unsubscribed</title><p>You are unsubscribed. No more emails.</p>")

