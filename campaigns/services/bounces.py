"""Bounces learned at SMTP time: a hard bounce suppresses the address from the next batch on, and
a recipient whose mail is deferred period after period is suppressed as a soft bounce.

- Hard: a 5xx refusal about the recipient: enhanced status 5.1.x (bad address) or 5.2.1 (mailbox
  disabled), or, with no enhanced status, reply 550, 551 or 553. Other 5xx refusals (5.7.x policy
  or spam blocks, 552 message too big, 554) fail the send but say nothing about the address.
- Soft: the send was deferred (4xx) through every attempt of its period, and so were the customer's
  previous sends, `MAB_SOFT_BOUNCE_PERIODS` in a row (0: never).

Suppression is the customer's status `bounced`, which every selection and the send-time re-check
honour (only `active` customers are mailed).
"""

import logging
import re

from sqlmodel import Session

from campaigns import metrics
from campaigns.db import on_commit
from campaigns.repositories import customers as customer_repo
from campaigns.settings import get_settings

log = logging.getLogger(__name__)
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
DEFERRED = "deferred"  # the prefix of the error of a send deferred through all its attempts


def smtp_bounce(exc) -> str | None:
    """"hard", "soft" (deferred through every attempt) or None, for a permanent DeliveryError."""
    if getattr(exc, "deferred", False):
        return "soft"
    code = getattr(exc, "code", None)
    if code is None or code < 500:
        return None
    enhanced = _ENHANCED.search(str(exc))
    if enhanced and enhanced.group(1) == "5":
        subject, detail = enhanced.group(2), enhanced.group(3)
        return "hard" if subject == "1" or (subject, detail) == ("2", "1") else None
    return "hard" if code in (550, 551, 553) else None


def apply_smtp_bounces(session: Session, results: list[dict]) -> None:
    """Suppress the customers of a batch's hard bounces, and of soft bounces that reached the
    threshold. Runs in the batch's transaction, so the next batch's send-time check sees it."""
    hard = [r["xid"] for r in results if r.get("bounce") == "hard"]
    soft = [r["xid"] for r in results if r.get("bounce") == "soft"]
    periods = get_settings().soft_bounce_periods
    if soft and periods:
        soft = [x for x in soft if _deferred_every_time(session, x, periods)]
    else:
        soft = []
    for kind, ids in (("hard", hard), ("soft", soft)):
        if ids:
            suppressed = customer_repo.bounce_active(session, ids)
            on_commit(session, lambda k=kind, n=suppressed: metrics.count_bounces("smtp", k, n))
            log.info("%s SMTP %s bounce(s): customers suppressed", suppressed, kind,
                     extra={"kind": kind, "source": "smtp", "customers": ids[:20]})


def _deferred_every_time(session: Session, external_id: str, periods: int) -> bool:
    errors = customer_repo.recent_send_errors(session, external_id, periods)
    return len(errors) == periods and all(e is not None and e.startswith(DEFERRED) for e in errors)
