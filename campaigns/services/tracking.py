"""Click and unsubscribe links: verified tokens in, sends resolved, nothing taken from the request."""

import html
from html import escape

from sqlmodel import Session

from campaigns import signing
from campaigns.errors import NotFound
from campaigns.models import Campaign, Customer, CustomerStatus, EventStatus, EventType, Send, utcnow
from campaigns.repositories import customers as customer_repo
from campaigns.repositories import events as event_repo


def _send(session: Session, purpose: str, token: str) -> Send:
    send_id = signing.verify(purpose, token)
    send = session.get(Send, send_id) if send_id is not None else None
    if send is None:
        raise NotFound("unknown or invalid link")
    return send


def click_target(session: Session, token: str) -> tuple[int, int, str]:
    """(send id, link number, where to send the browser) of a click: the target is always one of the
    campaign's own links, chosen by the number inside the signed token, never a URL from the request."""
    verified = signing.verify_click(token)
    send = session.get(Send, verified[0]) if verified else None
    campaign = session.get(Campaign, send.campaign_id) if send else None
    link = verified[1] if verified else 0
    if campaign is None or link > len(campaign.links):
        raise NotFound("unknown or invalid link")
    return send.id, link, campaign.landing_url if link == 0 else html.unescape(campaign.links[link - 1])


def unsubscribe_send(session: Session, token: str, *, apply: bool) -> None:
    """Check the token (404 when forged); with `apply`, unsubscribe the customer for good and record
    an `unsubscribe` event for the send, in the same transaction. Synchronous on purpose: the next
    batch of any period re-reads suppression, so it must be committed when the page says so. The
    event id is per send, so a repeated POST stores one event."""
    send = _send(session, "unsub", token)
    if apply:
        customer_repo.set_status(session, send.customer_id, CustomerStatus.UNSUBSCRIBED)
        customer = session.get(Customer, send.customer_id)
        now = utcnow()
        event_repo.insert_new_events(session, [{
            "event_id": f"unsub-{send.id}",
            "type": EventType.UNSUBSCRIBE,
            "status": EventStatus.APPLIED,
            "campaign_id": send.campaign_id,
            "send_id": send.id,
            "customer_external_id": customer.external_id if customer else None,
            "revenue": 0.0,
            "occurred_at": now,
            "received_at": now,
            "reason": None,
            "user_agent": None,
            "link": None,
        }])


def confirm_page(token: str) -> str:
    return (
        "<!doctype html><title>Unsubscribe</title>"
        f'<form method="post" action="/u/{escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<p>Stop receiving these emails?</p><button type=submit>Unsubscribe</button></form>"
    )
