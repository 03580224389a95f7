"""Bounces and complaints pushed by an email service provider, in its native format: Mailgun here;
SendGrid, Amazon SES (through SNS) and Postmark in the esp_* modules beside it, which share
`match` and `apply` below.

Mailgun (`POST /webhooks/esp/mailgun`): every event carries `signature.timestamp`, `signature.token`
and `signature.signature` = hex HMAC-SHA256 of timestamp + token under the account's webhook signing
key (MAB_MAILGUN_SIGNING_KEY). The timestamp must be within MAB_WEBHOOK_TOLERANCE_SECONDS, and a
token is accepted once (kept in Redis, like the conversion webhook's signatures). A bad signature is
a 401 and records nothing.

The event is matched to its send by the Message-ID Mailgun reports (`<send-ID.SEED@…>`) and must
name the send's own address: `failed` with severity `permanent` and a 5.1.x/5.2.1 status (or, with
none, code 550/551/553) is a hard bounce, `complained` a complaint; other events are acknowledged
and change nothing. An event for no send we know is counted as unmatched.
"""

import hashlib
import hmac
import json
import re
import time

from sqlmodel import Session

from campaigns import metrics
from campaigns.errors import InvalidInput, Unauthorized, Unavailable
from campaigns.repositories import sends as send_repo
from campaigns.services import feedback_mail, webhooks
from campaigns.settings import get_settings

MESSAGE_ID = re.compile(r"^<?send-(\d{1,18})\.(\d{1,12})@[^>\s]+>?$")
_STATUS = re.compile(r"\b5\.(\d{1,3})\.(\d{1,3})\b")
MAILGUN_REPLAY_PREFIX = "mab:webhook:mailgun:"


KINDS = ("hard", "complaint", "unsubscribe", "soft", "delivered")


def match(session: Session, message_id: str | None, recipient: str | None, source: str):
    """(send, customer) an ESP's event is about, or None. By our Message-ID `<send-ID.SEED@…>` when
    the ESP reports it (the recipient, when given, must be that send's address); else by the
    recipient's address: that customer's latest delivered send (a bounce or a complaint is about the
    address; the send only attributes it to a campaign and a variant)."""
    found = MESSAGE_ID.match((message_id or "").strip())
    if found:
        hit = send_repo.send_for_message_id(session, int(found.group(1)), int(found.group(2)))
        if hit is not None and (not recipient or recipient.lower() == (hit[1].email or "").lower()):
            return hit
    return send_repo.latest_send_to(session, recipient) if recipient else None


def apply(session: Session, kind: str, message_id: str | None, recipient: str | None, detail: str,
          source: str) -> str:
    """Record one normalised ESP event: `hard` bounce (suppress), `complaint` (unsubscribe, feeds the
    guard), `unsubscribe`; `soft` bounces and `delivered` are acknowledged and counted only (a soft
    bounce is the ESP's to retry). Returns what happened."""
    if kind in ("soft", "delivered"):
        metrics.count_inbound("ignored")
        return f"ignored: {kind} {detail}".rstrip()
    hit = match(session, message_id, recipient, source)
    if hit is None:
        metrics.count_inbound("unmatched")
        return f"unmatched: no send of ours with Message-ID {message_id!r} to {recipient!r}"
    send, customer = hit
    if kind == "hard":
        return feedback_mail.record_hard_bounce(session, send, customer, detail or "hard bounce", source=source)
    if kind == "complaint":
        return feedback_mail.record_complaint(session, send, customer, source=source)
    return feedback_mail.record_unsubscribe(session, send, customer, source=source)


def each_event(events: list, record) -> list[str]:
    """Record every event of a batch (`record` says what happened to one, as a line or a list of
    lines); an event that cannot be read is counted and said, never dropped silently, and does not
    stop the others (the ESP would resend the whole batch)."""
    outcomes: list[str] = []
    for i, event in enumerate(events):
        try:
            done = record(event)
        except InvalidInput as exc:
            metrics.count_inbound("unparseable")
            done = f"unparseable: event {i}: {exc.field}: {exc.message}"
        outcomes += [done] if isinstance(done, str) else done
    return outcomes


def verify_mailgun(payload: dict, now: float | None = None) -> str:
    """Check the event's signature; returns the replay key to claim. Raises Unauthorized."""
    key = get_settings().mailgun_signing_key
    if not key:
        raise Unavailable("the Mailgun webhook is not configured (set MAB_MAILGUN_SIGNING_KEY)")
    sig = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(sig, dict) or not all(isinstance(sig.get(k), str) for k in ("timestamp", "token", "signature")):
        raise Unauthorized("missing signature.timestamp, signature.token or signature.signature")
    try:
        ts = int(sig["timestamp"])
    except ValueError:
        raise Unauthorized("signature.timestamp must be unix seconds") from None
    tolerance = get_settings().webhook_tolerance_seconds
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise Unauthorized(f"stale or future signature.timestamp (more than {tolerance} s from now)")
    expected = hmac.new(key.encode(), (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), sig["signature"].strip().lower().encode()):
        raise Unauthorized("bad signature")
    return MAILGUN_REPLAY_PREFIX + hashlib.sha256(sig["token"].encode()).hexdigest()


def receive_mailgun(session: Session, body: bytes) -> str:
    """Verify, then record one Mailgun event; returns what happened."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise Unauthorized("the body is not JSON: no signature to check") from None
    replay_key = verify_mailgun(payload)
    webhooks.claim(replay_key)
    try:
        return _record_mailgun(session, payload.get("event-data"))
    except InvalidInput:
        webhooks.release(replay_key)  # nothing was recorded: the same request may come again
        raise


def _record_mailgun(session: Session, data) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise InvalidInput("event-data.event", "a Mailgun event names its type")
    event = data["event"]
    if event not in ("failed", "complained"):
        metrics.count_inbound("ignored")
        return f"ignored: event {event}"
    message_id = str(((data.get("message") or {}).get("headers") or {}).get("message-id") or "")
    found = MESSAGE_ID.match(message_id.strip())
    match = send_repo.send_for_message_id(session, int(found.group(1)), int(found.group(2))) if found else None
    recipient = str(data.get("recipient") or "").lower()
    if match is None or (recipient and recipient != (match[1].email or "").lower()):
        metrics.count_inbound("unmatched")
        return f"unmatched: no send of ours with Message-ID {message_id!r} to {recipient!r}"
    send, customer = match
    if event == "complained":
        return feedback_mail.record_complaint(session, send, customer, source="mailgun")
    status = data.get("delivery-status") or {}
    text = f"{status.get('enhanced-code') or ''} {status.get('description') or ''} {status.get('message') or ''}"
    enhanced = _STATUS.search(text)
    code = status.get("code")
    hard = data.get("severity") == "permanent" and (
        (enhanced is not None and (enhanced.group(1) == "1" or enhanced.groups() == ("2", "1")))
        or (enhanced is None and code in (550, 551, 553)))
    if not hard:
        metrics.count_inbound("ignored")
        return f"ignored: send {send.id}: {data.get('severity')} failure {code} {text.strip()} (not a hard bounce)"
    return feedback_mail.record_hard_bounce(session, send, customer, text.strip() or str(code), source="mailgun")
