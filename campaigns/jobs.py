"""The one way in for background work: tasks are sent to the workers by name.

Services, the API, the CLI and beat's sweeper all dispatch through here, so none of them imports
`worker/` (which imports the services: one direction, no cycle). The broker is a fast path, not
the source of truth: every unit of work can be found again in the database (leases, states), and
`services/sweeper.py` re-dispatches what a lost task left behind. So a dispatch that fails after a
commit (`dispatch_after_commit`) is logged and counted, never raised into the committed session.
"""

import logging
from functools import lru_cache

from celery import Celery

from campaigns import metrics
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

QUEUE = "mab"
RUN_PERIOD = "worker.tasks.run_period"
DELIVER_CHUNK = "worker.tasks.deliver_chunk"
PROCESS_EVENTS = "worker.tasks.process_events"
FOLD_CLICKS = "worker.tasks.fold_clicks"
REFRESH_REPORT = "worker.tasks.refresh_report"


class BrokerUnavailable(Exception):
    """The task could not be handed to the broker (Redis down or unreachable)."""


@lru_cache
def celery_app() -> Celery:
    """The Celery app of every process: producers use it to send, `worker/app.py` adds the task
    modules and beat's schedule to the same object."""
    settings = get_settings()
    app = Celery("mab", broker=settings.broker_url())
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        # Redelivery of a dead worker's unacknowledged task happens after the visibility timeout; no
        # countdown may exceed it (see worker/tasks.py backoff), or Redis would hand a waiting task
        # to a second worker. The sweeper does not wait for it: it re-dispatches from the database.
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout},
        broker_connection_retry_on_startup=True,
        # A producer whose broker is down fails in seconds instead of retrying for minutes.
        broker_connection_timeout=5,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        task_default_queue=QUEUE,
        timezone="UTC",
    )
    return app


def send(name: str, *args, countdown: float | None = None, **kwargs) -> None:
    """Hand task `name` to the broker; raises BrokerUnavailable with the reason when it cannot."""
    app = celery_app()
    if app.conf.task_always_eager:  # tests that run tasks in-process: send_task would ignore the setting
        app.tasks[name].apply_async(args=list(args), kwargs=kwargs or None, countdown=countdown)
        return
    try:
        app.send_task(name, args=list(args), kwargs=kwargs or None, queue=QUEUE, countdown=countdown)
    except Exception as exc:  # kombu raises OperationalError, redis ConnectionError, socket errors …
        metrics.observe_dispatch_failure(name)
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc


def send_quietly(name: str, *args, **kwargs) -> bool:
    """`send`, for work the database already holds (a committed period or chunk): a broker that is
    down is logged, not raised, since the sweeper will find the work and dispatch it again."""
    try:
        send(name, *args, **kwargs)
        return True
    except BrokerUnavailable as exc:
        log.warning("could not dispatch %s%s: %s; the sweeper will dispatch it again once the broker answers",
                    name.rsplit(".", 1)[-1], tuple(args), exc)
        return False


def run_period(period_id: int) -> bool:
    return send_quietly(RUN_PERIOD, period_id)


def deliver_chunks(chunk_ids: list[int]) -> int:
    """Dispatch every chunk; how many reached the broker."""
    return sum(send_quietly(DELIVER_CHUNK, chunk_id) for chunk_id in chunk_ids)


def refresh_report(campaign_id: int) -> bool:
    return send_quietly(REFRESH_REPORT, campaign_id)


def broker_reachable() -> str | None:
    """None when the broker answers a ping, else why not (for the CLI, before it writes anything)."""
    import redis

    url = get_settings().broker_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
        return None
    except Exception as exc:
        return f"no broker answers at {url} ({type(exc).__name__})"
