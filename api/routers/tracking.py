"""Links inside emails: signed click tracking and one-click unsubscribe (RFC 8058)."""

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.deps import SessionDep
from campaigns.models import utcnow
from campaigns.schemas import USER_AGENT_MAX, EventIn
from campaigns.services import events, tracking

router = APIRouter(tags=["tracking"], include_in_schema=True)


@router.get("/t/{token}", status_code=307, response_class=RedirectResponse)
def click(token: str, request: Request, session: SessionDep):
    """Record a click and redirect to the campaign's own landing page (never a URL from the request).
    The click keeps its time, user agent and link number: the worker judges scanners and bots by them."""
    send_id, link, target = tracking.click_target(session, token)
    agent = request.headers.get("user-agent", "")[:USER_AGENT_MAX] or None
    events.enqueue([EventIn(event_id=f"click-{uuid.uuid4().hex}", type="click", send_id=send_id, link=link,
                            user_agent=agent, occurred_at=utcnow())])
    return RedirectResponse(target, status_code=307)


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

