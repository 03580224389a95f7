"""Bounce and complaint reports that arrive by mail: delivery status notifications (RFC 3464,
`multipart/report; report-type=delivery-status`) and feedback-loop reports (ARF, RFC 5965,
`report-type=feedback-report`). Operators pipe each message to `mab inbound`.

A report is matched to its send by the VERP address it was delivered to (campaigns/verp.py: a signed
token of the send in the To:/Delivered-To: headers), else by the Message-ID of the original message it
quotes (`<send-ID.SEED@domain>`: the send id and its period's seed must agree). A bounce must also name
the send's own address as its failed recipient, and an ARF report that names the original
recipient must name that address: a report about someone else changes nothing.

- A DSN whose recipient `failed` with status 5.1.x (bad address) or 5.2.1 (disabled) is a hard
  bounce: the customer becomes `bounced`. Other statuses (delays, policy refusals) change nothing.
- An ARF report (any feedback type but `not-spam`) is a complaint: the customer is unsubscribed
  for good and a `complaint` event is recorded on the send, which the auto-pause guard counts.
- A report that cannot be parsed, or names no send we know, is kept as a file under
  MAB_INBOUND_DIR (`unparseable/`, `unmatched/`), logged and counted; never silently dropped.
"""

import logging
import re
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesHeaderParser

from sqlmodel import Session

from campaigns import metrics, verp
from campaigns.db import on_commit
from campaigns.models import CustomerStatus, EventStatus, EventType, utcnow
from campaigns.repositories import customers as customer_repo
from campaigns.repositories import events as event_repo
from campaigns.repositories import sends as send_repo
from campaigns.settings import get_settings

log = logging.getLogger(__name__)
SEND_MESSAGE_ID = re.compile(rb"^(?:Message-ID|Original-Message-ID):[ \t]*<send-(\d{1,18})\.(\d{1,12})@[^>\s]+>",
                             re.I | re.M)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def process_report(session: Session, raw: bytes) -> str:
    """Record what one inbound report says; returns one line saying what happened."""
    try:
        report = _parse(raw)
    except Exception as exc:  # any parsing failure is the message's: kept and counted, not raised
        report = {"kind": None, "why": f"{type(exc).__name__}: {exc}"}
    if report["kind"] is None:
        return _keep(raw, "unparseable", report["why"])
    found = _send_of(session, raw, report)
    if found is None:
        return _keep(raw, "unmatched", "no known send's Message-ID in it")
    send, customer = found
    named = report.get("recipient")
    if named and named.lower() != (customer.email or "").lower():
        return _keep(raw, "unmatched", f"send {send.id} went to another address than the report names")
    if report["kind"] == "complaint":
        return record_complaint(session, send, customer)
    return _bounce(session, send, customer, report["status"], report["action"])


def _send_of(session: Session, raw: bytes, report: dict):
    """(send, customer) by the VERP return path the report was delivered to, else by the quoted Message-ID."""
    send_id = verp.send_of(raw.split(b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n", 1)[0])
    found = send_repo.send_with_customer(session, send_id) if send_id is not None else None
    if found is None and report.get("send"):
        found = send_repo.send_for_message_id(session, *report["send"])
    return found


def _parse(raw: bytes) -> dict:
    message = message_from_bytes(raw, policy=policy.compat32)
    if message.get_content_type() != "multipart/report":
        return {"kind": None, "why": f"not a report ({message.get_content_type()})"}
    report_type = (message.get_param("report-type") or "").lower()
    body = raw.split(b"\n\n", 1)[-1] if b"\r\n\r\n" not in raw else raw.split(b"\r\n\r\n", 1)[-1]
    ids = SEND_MESSAGE_ID.findall(body)  # the quoted original's headers, whatever part holds them
    send = (int(ids[0][0]), int(ids[0][1])) if ids else None
    parts = [p for p in message.walk() if not p.is_multipart() or p.get_content_maintype() == "message"]
    if report_type == "delivery-status":
        fields = _fields(parts, "message/delivery-status")
        if not fields.get("action"):
            return {"kind": None, "why": "a delivery-status report without an Action field"}
        recipient = _address(fields.get("final-recipient") or fields.get("original-recipient") or "")
        return {"kind": "bounce", "send": send, "recipient": recipient, "action": fields["action"].lower(),
                "status": fields.get("status", "")}
    if report_type == "feedback-report":
        fields = _fields(parts, "message/feedback-report")
        if not fields.get("feedback-type"):
            return {"kind": None, "why": "a feedback report without a Feedback-Type field"}
        if fields["feedback-type"].strip().lower() == "not-spam":
            return {"kind": None, "why": "feedback type not-spam"}
        return {"kind": "complaint", "send": send, "recipient": _address(fields.get("original-rcpt-to", ""))}
    return {"kind": None, "why": f"report type {report_type or 'missing'}"}


def _fields(parts: list[Message], content_type: str) -> dict[str, str]:
    """The machine-readable part's fields (lower-case names; the first recipient's block wins)."""
    fields: dict[str, str] = {}
    for part in parts:
        if part.get_content_type() != content_type:
            continue
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else [
            BytesHeaderParser().parsebytes(part.get_payload(decode=True) or b"")]
        for block in blocks:
            for name, value in block.items():
                fields.setdefault(name.lower(), str(value).strip())
    return fields


def _address(field: str) -> str:
    """`rfc822; a@b.example` → `a@b.example`."""
    return field.split(";", 1)[-1].strip().strip("<>")


def _bounce(session: Session, send, customer, status: str, action: str) -> str:
    found = _STATUS.search(status)
    hard = (action == "failed" and found is not None and found.group(1) == "5"
            and (found.group(2) == "1" or (found.group(2), found.group(3)) == ("2", "1")))
    if not hard:
        metrics.count_inbound("ignored")
        return f"ignored: send {send.id}: action {action}, status {status or 'none'} (not a hard bounce)"
    return record_hard_bounce(session, send, customer, status)


def record_hard_bounce(session: Session, send, customer, status: str, source: str = "mail") -> str:
    """Suppress the customer of a hard-bounced send and record one `bounce` event on the send (both
    idempotent); one line saying what happened."""
    suppressed = customer_repo.bounce_active(session, [customer.external_id])
    _event(session, send, customer, EventType.BOUNCE, reason=status[:200] or None)
    if source == "mail":
        on_commit(session, lambda: metrics.count_inbound("recorded"))
    on_commit(session, lambda: metrics.count_bounces(source, "hard", suppressed))
    log.info("hard bounce (%s) for send %s: customer suppressed", source, send.id,
             extra={"send_id": send.id, "campaign_id": send.campaign_id, "status": status, "source": source})
    return f"hard bounce: send {send.id} (status {status}); customer {customer.external_id} " + (
        "suppressed" if suppressed else f"already {customer.status}")


def record_complaint(session: Session, send, customer, source: str = "mail") -> str:
    """Unsubscribe the customer for good and record one complaint event on the send (idempotent)."""
    customer_repo.set_status(session, customer.id, CustomerStatus.UNSUBSCRIBED)
    _event(session, send, customer, EventType.COMPLAINT)
    if source == "mail":
        on_commit(session, lambda: metrics.count_inbound("recorded"))
    on_commit(session, lambda: metrics.count_bounces(source, "complaint", 1))
    log.info("complaint (%s) for send %s: customer unsubscribed", source, send.id,
             extra={"send_id": send.id, "campaign_id": send.campaign_id, "source": source})
    return f"complaint: send {send.id}; customer {customer.external_id} unsubscribed"


def record_unsubscribe(session: Session, send, customer, source: str) -> str:
    """An unsubscribe reported by an ESP (its own list-unsubscribe handling): as our one-click one,
    the customer is unsubscribed for good and one `unsubscribe` event is recorded on the send."""
    customer_repo.set_status(session, customer.id, CustomerStatus.UNSUBSCRIBED)
    _event(session, send, customer, EventType.UNSUBSCRIBE, event_id=f"unsub-{send.id}")
    log.info("unsubscribe (%s) for send %s: customer unsubscribed", source, send.id,
             extra={"send_id": send.id, "campaign_id": send.campaign_id, "source": source})
    return f"unsubscribe: send {send.id}; customer {customer.external_id} unsubscribed"


def _event(session: Session, send, customer, kind: EventType, reason: str | None = None,
           event_id: str | None = None) -> None:
    """One event of `kind` per send: a repeated report stores nothing more (the id is the send's)."""
    now = utcnow()
    event_repo.insert_new_events(session, [{
        "event_id": event_id or f"{kind.value}-{send.id}", "type": kind, "status": EventStatus.APPLIED,
        "campaign_id": send.campaign_id, "send_id": send.id, "customer_external_id": customer.external_id,
        "revenue": 0.0, "occurred_at": now, "received_at": now, "reason": reason,
        "user_agent": None, "link": None,
    }])


def _keep(raw: bytes, outcome: str, why: str) -> str:
    folder = get_settings().inbound_dir / outcome
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.eml"
    path.write_bytes(raw)
    metrics.count_inbound(outcome)
    log.warning("inbound report %s (%s): kept as %s", outcome, why, path, extra={"outcome": outcome, "path": str(path)})
    return f"{outcome}: {why}; kept as {path}"
