"""Celery tasks: take ids or payloads, open their own session, call the services. Nothing more."""

import logging

from celery.exceptions import MaxRetriesExceededError
from sqlalchemy.exc import OperationalError

from campaigns.db import session_scope
from campaigns.delivery import DeliveryError
from campaigns.services import events, periods
from worker.app import celery_app

log = logging.getLogger(__name__)

RETRY = {"max_retries": 5}
# Backoff stays far below the broker's visibility timeout (see worker/app.py).
BACKOFF = (5, 15, 30, 60, 120)


@celery_app.task(bind=True, **RETRY)
def run_period(self, period_id: int) -> str:
    try:
        return periods.run_period(period_id)
    except (DeliveryError, OperationalError) as exc:
        try:
            raise self.retry(exc=exc, countdown=BACKOFF[min(self.request.retries, len(BACKOFF) - 1)])
        except MaxRetriesExceededError:
            periods.mark_failed(period_id, f"gave up after {self.max_retries} retries: {exc}")
            raise
    except Exception as exc:
        periods.mark_failed(period_id, f"{type(exc).__name__}: {exc}")
        raise


@celery_app.task(bind=True, **RETRY)
def process_events(self, payload: list[dict]) -> dict:
    try:
        with session_scope() as session:
            return events.process_events(session, payload)
    except OperationalError as exc:  # database busy or restarting: the events wait in the queue
        raise self.retry(exc=exc, countdown=BACKOFF[min(self.request.retries, len(BACKOFF) - 1)]) from exc


@celery_app.task
def start_due_periods() -> list[int]:
    return periods.start_due_periods()
