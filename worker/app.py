"""The Celery app: broker = Redis, tasks acknowledged late so a dead worker's task is redelivered."""

from celery import Celery

from campaigns.settings import get_settings
from worker import signals  # noqa: F401 (connects logging, task metrics and log context)


def make_celery() -> Celery:
    settings = get_settings()
    broker = settings.redis_url or "redis://127.0.0.1:6379/0"
    app = Celery("mab", broker=broker, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        # Redelivery of a dead worker's unacknowledged task happens after the visibility timeout; no
        # countdown may exceed it (see worker/tasks.py backoff), or Redis would hand a waiting task
        # to a second worker.
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_default_queue="mab",
        beat_schedule={
            "start-due-periods": {
                "task": "worker.tasks.start_due_periods",
                "schedule": settings.beat_interval_seconds,
            },
            "fold-clicks": {
                "task": "worker.tasks.fold_clicks",
                "schedule": settings.click_sweep_seconds,
                "kwargs": {"chain": False},  # a sweep: it must not start a second chain
            },
            "guard-campaigns": {
                "task": "worker.tasks.guard_campaigns",
                "schedule": settings.guard_interval_seconds,
            },
            "apply-retention": {
                "task": "worker.tasks.apply_retention",
                "schedule": 3600.0,
            },
        },
        timezone="UTC",
    )
    return app


celery_app = make_celery()
