"""SendGrid's Event Webhook (`POST /webhooks/esp/sendgrid`), verified as SendGrid signs it.

SendGrid signs `timestamp + raw body` with ECDSA (P-256, SHA-256) and sends the base64 DER signature
in `X-Twilio-Email-Event-Webhook-Signature`, the timestamp in `X-Twilio-Email-Event-Webhook-Timestamp`.
The verification key is the base64 public key SendGrid shows when signing is enabled
(MAB_SENDGRID_VERIFICATION_KEY). The timestamp must be within MAB_WEBHOOK_TOLERANCE_SECONDS and a
signature is accepted once. A bad signature is a 401 and records nothing.

The body is a JSON array of events. `bounce` (type `bounce`) is a hard bounce, `bounce` of type
`blocked` and `deferred` are soft, `dropped` for a bounced or invalid address is a hard bounce,
`spamreport` a complaint, `unsubscribe` and `group_unsubscribe` unsubscribes, `delivered` is counted.
Events are matched by `smtp-id` (our Message-ID) and `email`.
"""

import base64
import hashlib
import json
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import Session

from campaigns.errors import InvalidInput, Unauthorized, Unavailable
from campaigns.services import esp_webhooks, webhooks
from campaigns.settings import get_settings

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
REPLAY_PREFIX = "mab:webhook:sendgrid:"
HARD_DROPS = ("bounced address", "invalid", "spam reporting address")


def _public_key():
    key = get_settings().sendgrid_verification_key
    if not key:
        raise Unavailable("the SendGrid webhook is not configured (set MAB_SENDGRID_VERIFICATION_KEY)")
    try:
        public = serialization.load_der_public_key(base64.b64decode(key))
    except ValueError as exc:
        raise Unavailable(f"MAB_SENDGRID_VERIFICATION_KEY is not a base64 DER public key: {exc}") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise Unavailable("MAB_SENDGRID_VERIFICATION_KEY is not an ECDSA public key")
    return public


def verify(body: bytes, signature: str | None, timestamp: str | None, now: float | None = None) -> str:
    """Check the signature of a request; returns the replay key to claim. Raises Unauthorized."""
    public = _public_key()
    if not signature or not timestamp:
        raise Unauthorized(f"missing {SIGNATURE} or {TIMESTAMP}")
    try:
        ts = int(timestamp)
        der = base64.b64decode(signature, validate=True)
    except ValueError:
        raise Unauthorized("the timestamp must be unix seconds and the signature base64") from None
    tolerance = get_settings().webhook_tolerance_seconds
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise Unauthorized(f"stale or future {TIMESTAMP} (more than {tolerance} s from now)")
    try:
        public.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Unauthorized("bad signature") from None
    return REPLAY_PREFIX + hashlib.sha256(der).hexdigest()


def receive(session: Session, body: bytes, signature: str | None, timestamp: str | None) -> list[str]:
    replay_key = verify(body, signature, timestamp)
    webhooks.claim(replay_key)
    try:
        events = json.loads(body)
    except ValueError:
        webhooks.release(replay_key)
        raise InvalidInput("body", "SendGrid posts a JSON array of events") from None
    if not isinstance(events, list):
        webhooks.release(replay_key)
        raise InvalidInput("body", "SendGrid posts a JSON array of events")
    return esp_webhooks.each_event(events, lambda e: _record(session, e))


def kind_of(event: dict) -> str | None:
    name, bounce_type = event.get("event"), str(event.get("type") or "").lower()
    if name == "bounce":
        return "soft" if bounce_type == "blocked" else "hard"
    if name == "dropped":
        reason = str(event.get("reason") or "").lower()
        return "hard" if any(r in reason for r in HARD_DROPS) else None
    return {"deferred": "soft", "spamreport": "complaint", "unsubscribe": "unsubscribe",
            "group_unsubscribe": "unsubscribe", "delivered": "delivered"}.get(name)


def _record(session: Session, event) -> str:
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise InvalidInput("event", "a SendGrid event is an object naming its `event`")
    kind = kind_of(event)
    if kind is None:
        esp_webhooks.metrics.count_inbound("ignored")
        return f"ignored: event {event['event']}"
    detail = " ".join(str(event.get(k) or "") for k in ("status", "reason")).strip()
    return esp_webhooks.apply(session, kind, event.get("smtp-id"), event.get("email"), detail, "sendgrid")
