"""Celery tasks: take ids or payloads, open their own session, call the services. Nothing more."""

import logging

from celery.exceptions import MaxRetriesExceededError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from campaigns.db import session_scope
from campaigns.delivery import DeliveryError
from campaigns.jobs import BrokerUnavailable
from campaigns.services import clicks, events, guard, mailbox, periods, report_store, retention, sending, sweeper
from campaigns.settings import get_settings
from worker.app import celery_app

log = logging.getLogger(__name__)

RETRY = {"max_retries": 6}


def backoff(retries: int) -> float:
    """5, 15, 45 … seconds, never longer than half the broker's visibility timeout: a countdown past
    it would make Redis hand the waiting task to a second worker."""
    return min(5 * 3**retries, get_settings().broker_visibility_timeout / 2)


@celery_app.task(bind=True, **RETRY)
def run_period(self, period_id: int) -> str:
    """The coordinator: plan the period and fan its chunks out."""
    try:
        return periods.coordinate(period_id)
    except OperationalError as exc:
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
    except Exception as exc:
        periods.mark_failed(period_id, f"{type(exc).__name__}: {exc}")
        raise


@celery_app.task(bind=True, **RETRY)
def deliver_chunk(self, chunk_id: int) -> str:
    try:
        outcome = sending.deliver_chunk(chunk_id)
    except (DeliveryError, OperationalError) as exc:
        try:
            raise self.retry(exc=exc, countdown=backoff(self.request.retries))
        except MaxRetriesExceededError:
            log.error("chunk %s: gave up after %s retries: %s", chunk_id, self.max_retries, exc)
            raise
    if outcome == sending.HELD:
        # The holder may be dead: this can be its own task, which the broker redelivers a visibility
        # timeout after handing it out, before the dead holder's lease ran out. Dropping it would
        # leave the chunk to nobody, so look again once the lease can have run out; by then a live
        # holder has renewed it (or finished), and a dead one's is free to take over.
        settings = get_settings()
        try:
            raise self.retry(countdown=min(settings.chunk_lease_seconds + 1, settings.broker_visibility_timeout / 2))
        except MaxRetriesExceededError:
            log.warning("chunk %s: still held by another worker after %s looks; leaving it to that worker",
                        chunk_id, self.max_retries)
    return outcome


@celery_app.task(bind=True, **RETRY)
def process_events(self, payload: list[dict]) -> dict:
    try:
        with session_scope() as session:
            return events.process_events(session, payload)
    except OperationalError as exc:  # database busy or restarting: the events wait in the queue
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


@celery_app.task(bind=True, **RETRY)
def fold_clicks(self, chain: bool = True) -> dict:
    """A link of the chain that folds clicks while they flow, or (chain=False) beat's sweep: see
    campaigns/services/clicks.py."""
    try:
        return clicks.fold(chain=chain)
    except (OperationalError, RedisError, BrokerUnavailable) as exc:  # the batch stays pending, read back first
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


@celery_app.task
def start_due_periods() -> list[int]:
    return periods.start_due_periods()


@celery_app.task
def guard_campaigns() -> dict[int, str]:
    """Beat, every MAB_GUARD_INTERVAL_SECONDS: pause campaigns whose unsubscribe or complaint rate
    in a period passes its threshold (campaigns/services/guard.py)."""
    return guard.run_guard()


@celery_app.task
def sweep() -> dict:
    """Beat, every MAB_SWEEP_INTERVAL_SECONDS: hand out again the work of lost tasks
    (campaigns/services/sweeper.py)."""
    return sweeper.sweep()


@celery_app.task
def poll_inbound_mailbox() -> dict[str, dict[str, int]]:
    """Beat, every MAB_INBOUND_POLL_SECONDS: bounce and complaint reports in MAB_INBOUND_MAILDIR and
    MAB_INBOUND_POP3_URL (campaigns/services/mailbox.py)."""
    return mailbox.poll()


@celery_app.task
def apply_retention() -> dict:
    """Beat, hourly: delete outbox files past MAB_OUTBOX_RETENTION_DAYS, trim logs past MAB_LOG_MAX_BYTES."""
    return retention.apply_retention()


@celery_app.task
def refresh_report(campaign_id: int) -> str:
    """Recompute a campaign's stored lift report unless it is current (services/report_store.py)."""
    return report_store.refresh(campaign_id)


@celery_app.task
def refresh_reports() -> list[int]:
    """Beat, every MAB_REPORT_REFRESH_SECONDS: ask for the reports that fell behind their data."""
    return report_store.refresh_behind()
