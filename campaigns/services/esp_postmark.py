"""Postmark's webhooks (`POST /webhooks/esp/postmark`): bounce, spam complaint, subscription change
and delivery, authenticated as Postmark does it: HTTP basic auth with the user and password put in
the webhook's URL (`https://user:password@host/webhooks/esp/postmark`), compared with
MAB_POSTMARK_WEBHOOK_AUTH (`user:password`). Wrong or missing credentials are a 401 and record
nothing. Postmark signs nothing else, so recording is idempotent instead (one event per send).

Postmark reports its own MessageID, not ours: events are matched by the recipient's address (its
latest delivered send). A bounce of Type HardBounce or BadEmailAddress is hard, SpamComplaint a
complaint, Unsubscribe an unsubscribe, every other Type soft; a SubscriptionChange that suppresses
sending is recorded by its SuppressionReason (a reactivation never resubscribes anyone).
"""

import base64
import binascii
import hmac
import json

from sqlmodel import Session

from campaigns.errors import InvalidInput, Unauthorized, Unavailable
from campaigns.services import esp_webhooks
from campaigns.settings import get_settings

HARD = {"HardBounce", "BadEmailAddress"}
BOUNCE_TYPES = {"SpamComplaint": "complaint", "Unsubscribe": "unsubscribe"}  # other non-hard Types: soft
SUPPRESSION = {"HardBounce": "hard", "SpamComplaint": "complaint", "ManualSuppression": "unsubscribe"}


def authenticate(authorization: str | None) -> None:
    expected = get_settings().postmark_webhook_auth
    if not expected:
        raise Unavailable("the Postmark webhook is not configured (set MAB_POSTMARK_WEBHOOK_AUTH)")
    scheme, _, value = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(value, validate=True) if scheme.lower() == "basic" else b""
    except (binascii.Error, ValueError):
        given = b""
    if not hmac.compare_digest(given, expected.encode()):
        raise Unauthorized("missing or wrong basic-auth credentials")


def receive(session: Session, body: bytes, authorization: str | None) -> list[str]:
    authenticate(authorization)
    try:
        event = json.loads(body)
    except ValueError:
        raise InvalidInput("body", "Postmark posts one JSON object per event") from None
    return esp_webhooks.each_event([event], lambda e: _record(session, e))


def kind_of(event: dict) -> str | None:
    record = event.get("RecordType")
    if record == "Bounce":
        kind = event.get("Type")
        return "hard" if kind in HARD else BOUNCE_TYPES.get(kind, "soft")
    if record == "SpamComplaint":
        return "complaint"
    if record == "SubscriptionChange":
        return SUPPRESSION.get(event.get("SuppressionReason")) if event.get("SuppressSending") is True else None
    return "delivered" if record == "Delivery" else None


def _record(session: Session, event) -> str:
    if not isinstance(event, dict) or not isinstance(event.get("RecordType"), str):
        raise InvalidInput("RecordType", "a Postmark event names its RecordType")
    kind = kind_of(event)
    if kind is None:
        esp_webhooks.metrics.count_inbound("ignored")
        return f"ignored: {event['RecordType']}"
    recipient = event.get("Email") or event.get("Recipient")
    detail = " ".join(str(event.get(k) or "") for k in ("Type", "Description", "Details")).strip()
    return esp_webhooks.apply(session, kind, None, recipient if isinstance(recipient, str) else None, detail,
                              "postmark")
