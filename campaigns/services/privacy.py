"""GDPR: export everything stored about one customer, and erase their personal data.

Erasure anonymises in place, it deletes no ledger row:

- the customer row stays (the send ledger points at its id) but loses everything personal: the
  external id becomes `erased-<random>` (so the source system's id no longer leads here), the email
  `erased-<random>@erased.invalid` (`.invalid` is reserved: it can never be delivered), attributes
  `{}`, segment none, consent false, status `erased`. Only `active` customers are ever selected for a
  period, and delivery re-checks the status of every queued send, so nothing is mailed again;
- their orders are deleted: an order's id, time and amount lead back to the person in the shop's own
  records, and orders feed nothing but the customer's own segmentation;
- their events keep type, status, times, revenue and the send they belong to (the reports count
  them) but lose the external id and the user agent;
- their send ledger rows keep ids, campaign, period, segment, arm, propensity, status, counts and
  revenue, so each campaign's aggregate statistics, the engine's posteriors and every report stay
  exactly the same; a delivery error that quotes an address or an attribute is masked;
- the `.eml` files of the outbox backend (a local copy of every email sent) are removed after commit.
"""

import logging
import re
import secrets
from pathlib import Path

from sqlmodel import Session

from campaigns.db import on_commit
from campaigns.errors import NotFound
from campaigns.logging_config import EMAIL
from campaigns.models import CustomerStatus, utcnow
from campaigns.repositories import privacy as repo
from campaigns.services import period_health
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

ERASED_DOMAIN = "erased.invalid"
MASK = "<erased>"


def _customer(session: Session, external_id: str, *, for_update: bool = False):
    c = repo.customer(session, external_id, for_update=for_update)
    if c is None:
        raise NotFound(f"no customer with external_id '{external_id}'")
    return c


def export(session: Session, external_id: str) -> dict:
    c = _customer(session, external_id)
    sends = repo.sends(session, c.id)
    events = repo.events(session, [r.Send.id for r in sends], c.external_id)
    return {
        "exported_at": utcnow(),
        "customer": {
            "id": c.id, "external_id": c.external_id, "email": c.email,
            "segment": repo.segment_name(session, c.segment_id), "status": c.status, "consent": c.consent,
            "attributes": c.attributes, "created_at": c.created_at, "updated_at": c.updated_at,
        },
        "orders": [{"order_id": o.order_id, "ordered_at": o.ordered_at, "amount": o.amount}
                   for o in repo.orders(session, c.id)],
        "sends": [_send(r) for r in sends],
        "events": [{k: getattr(e, k) for k in (
            "event_id", "type", "status", "reason", "campaign_id", "send_id", "customer_external_id", "revenue",
            "occurred_at", "received_at", "user_agent", "link")} for e in events],
    }


def _send(r) -> dict:
    s = r.Send
    return {
        "send_id": s.id, "campaign_id": s.campaign_id, "campaign": r.campaign, "period": r.period,
        "segment": r.segment, "group": "control" if s.arm < 0 else "bandit", "arm": s.arm,
        "variant": r.variant if s.arm >= 0 else None, "params": r.params if s.arm >= 0 else None,
        "propensity": s.propensity, "status": s.status, "error": s.error, "message_id": s.message_id,
        "sent_at": s.sent_at, "clicks": s.clicks, "first_click_at": s.first_click_at,
        "conversions": s.conversions, "first_conversion_at": s.first_conversion_at, "revenue": s.revenue,
    }


def _masker(values: list[str]):
    """Replace the given strings (case-insensitive) and any email address with a mask."""
    words = sorted({v for v in values if len(v) >= 3}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) if words else None

    def mask(text: str) -> str:
        text = EMAIL.sub(MASK, text)
        return pattern.sub(MASK, text) if pattern else text

    return mask


def erase(session: Session, external_id: str) -> dict:
    """See the module's docstring. Erasing an erased customer again (by its placeholder) is harmless."""
    c = _customer(session, external_id, for_update=True)
    attribute_values = [str(v) for v in (c.attributes or {}).values() if v is not None and not isinstance(v, bool)]
    mask = _masker([c.email, c.external_id, *attribute_values])
    sends = repo.sends(session, c.id)
    send_ids = [r.Send.id for r in sends]
    scrubbed = repo.scrub_events(session, send_ids, c.external_id)
    repo.set_send_errors(session, [{"sid": sid, "err": mask(err)} for sid, err in repo.send_errors(session, c.id)
                                   if mask(err) != err])
    for period in repo.periods_of(session, {r.Send.period_id for r in sends}):
        period.failures = period_health.scrub(period.failures, c.external_id, mask)
    orders = repo.delete_orders(session, c.id)
    token = secrets.token_hex(12)
    c.external_id = f"erased-{token}"
    c.email = f"erased-{token}@{ERASED_DOMAIN}"
    c.attributes = {}
    c.segment_id = None
    c.consent = False
    c.status = CustomerStatus.ERASED
    c.updated_at = utcnow()
    session.flush()
    outbox = [(r.Send.campaign_id, r.period, r.Send.id) for r in sends if r.period is not None]
    on_commit(session, lambda: _remove_outbox_copies(outbox))
    log.info("customer %s erased: %d orders deleted, %d events scrubbed, %d sends kept",
             c.id, orders, scrubbed, len(send_ids))
    return {"customer_id": c.id, "external_id": c.external_id, "status": c.status, "orders_deleted": orders,
            "events_scrubbed": scrubbed, "sends_kept": len(send_ids)}


def _remove_outbox_copies(sends: list[tuple[int, int, int]]) -> None:
    """The outbox backend's copy of each email sent to the customer (a file per send)."""
    root = Path(get_settings().outbox_dir)
    for campaign_id, number, send_id in sends:
        path = root / f"campaign-{campaign_id}" / f"period-{number}" / f"{send_id}.eml"
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove an erased customer's outbox copy", extra={"campaign_id": campaign_id})
