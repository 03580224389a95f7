"""Click and unsubscribe links: verified tokens in, sends resolved, nothing taken from the request."""

import asyncio
import html
import logging
from html import escape

from redis.exceptions import RedisError
from sqlmodel import Session

from campaigns import metrics, signing
from campaigns.db import session_scope
from campaigns.errors import NotFound, Unavailable
from campaigns.models import Campaign, CampaignStatus, Customer, Send, utcnow
from campaigns.services import clicks, feedback_mail
from campaigns.settings import get_settings

log = logging.getLogger(__name__)


def _send(session: Session, purpose: str, token: str) -> Send:
    send_id = signing.verify(purpose, token)
    send = session.get(Send, send_id) if send_id is not None else None
    if send is None:
        raise NotFound("unknown or invalid link")
    return send


# (database, campaign id) -> (landing URL, literal links). A campaign's links are fixed once it leaves
# draft (only drafts can be edited) and only sent campaigns have click tokens, so an entry never goes
# stale; the database is part of the key because one process may serve several (the tests do).
_links: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {}
LINKS_CACHED = 10_000  # campaigns; past it, new ones are read each time (never more memory)
CLICK = ({"type": "click"},)  # one click, as the events-received metric counts it


def _read_links(send_id: int, campaign_id: int | None) -> tuple[int, tuple[str, tuple[str, ...]]] | None:
    """(campaign id, its links) from the database: the send is read only for a token mailed before
    campaign ids were signed into click tokens."""
    with session_scope() as session:
        if campaign_id is None:
            send = session.get(Send, send_id)
            if send is None:
                return None
            campaign_id = send.campaign_id
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            return None
        links = (campaign.landing_url, tuple(html.unescape(link) for link in campaign.links))
        if campaign.status != CampaignStatus.DRAFT and len(_links) < LINKS_CACHED:
            _links[(get_settings().resolved_database_url(), campaign_id)] = links
        return campaign_id, links


async def click(token: str, user_agent: str | None) -> str:
    """Record the click of a signed tracking link; returns where to send the browser: always one of
    the campaign's own links, chosen by the number inside the signed token, never a URL from the
    request. The hot path of every click: no database read once the campaign's links are cached,
    and one round trip to Redis (campaigns/services/clicks.py)."""
    verified = signing.verify_click(token)
    if verified is None:
        raise NotFound("unknown or invalid link")
    send_id, link, campaign_id = verified
    links = _links.get((get_settings().resolved_database_url(), campaign_id)) if campaign_id else None
    if links is None:
        found = await asyncio.to_thread(_read_links, send_id, campaign_id)
        if found is None:
            raise NotFound("unknown or invalid link")
        links = found[1]
    landing_url, literal = links
    if link > len(literal):
        raise NotFound("unknown or invalid link")
    try:
        schedule = await clicks.record(send_id, link, user_agent, utcnow())
    except (RedisError, OSError) as exc:  # nothing was recorded: the reader may retry the link
        log.warning("click not recorded, Redis unavailable: %s: %s", type(exc).__name__, exc)
        raise Unavailable(f"the event queue is unavailable, retry later ({type(exc).__name__})") from exc
    metrics.observe_events_received(CLICK)
    if schedule:
        await asyncio.to_thread(_schedule_fold)
    return landing_url if link == 0 else literal[link - 1]


def _schedule_fold() -> None:
    try:
        clicks.schedule_fold()
    except Exception as exc:  # the click is in the stream: beat's sweep folds it (MAB_CLICK_SWEEP_SECONDS)
        log.warning("click fold not scheduled, beat's sweep will fold (%s)", type(exc).__name__)


def unsubscribe_send(session: Session, token: str, *, apply: bool) -> None:
    """Check the token (404 when forged); with `apply`, unsubscribe the customer for good and record
    an `unsubscribe` event for the send, in the same transaction. Synchronous on purpose: the next
    batch of any period re-reads suppression, so it must be committed when the page says so. The
    event id is per send, so a repeated POST stores one event."""
    send = _send(session, "unsub", token)
    if apply:
        feedback_mail.record_unsubscribe(session, send, session.get(Customer, send.customer_id), source="link")


def confirm_page(token: str) -> str:
    return (
        "<!doctype html><title>Unsubscribe</title>"
        f'<form method="post" action="/u/{escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<p>Stop receiving these emails?</p><button type=submit>Unsubscribe</button></form>"
    )
