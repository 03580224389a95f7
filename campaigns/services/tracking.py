"""Click and unsubscribe links: verified tokens in, sends resolved, nothing taken from the request."""

from html import escape

from sqlmodel import Session

from campaigns import signing
from campaigns.errors import NotFound
from campaigns.models import Campaign, CustomerStatus, Send
from campaigns.repositories import customers as customer_repo


def _send(session: Session, purpose: str, token: str) -> Send:
    send_id = signing.verify(purpose, token)
    send = session.get(Send, send_id) if send_id is not None else None
    if send is None:
        raise NotFound("unknown or invalid link")
    return send


def click_target(session: Session, token: str) -> tuple[int, str]:
    send = _send(session, "click", token)
    return send.id, session.get(Campaign, send.campaign_id).landing_url


def unsubscribe_send(session: Session, token: str, *, apply: bool) -> None:
    """Check the token (404 when forged); with `apply`, unsubscribe the customer for good."""
    send = _send(session, "unsub", token)
    if apply:
        customer_repo.set_status(session, send.customer_id, CustomerStatus.UNSUBSCRIBED)


def confirm_page(token: str) -> str:
    return (
        "<!doctype html><title>Unsubscribe</title>"
        f'<form method="post" action="/u/{escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<p>Stop receiving these emails?</p><button type=submit>Unsubscribe</button></form>"
    )
