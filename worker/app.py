"""The Celery app of the workers and beat: the producers' app (campaigns/jobs.py) with the task
modules and beat's schedule. Tasks are acknowledged late, so a dead worker's task is redelivered;
beat's sweeper does not wait for that (campaigns/services/sweeper.py)."""

from celery import Celery

from campaigns import jobs
from campaigns.settings import get_settings
from worker import signals  # noqa: F401 (connects logging, task metrics and log context)


def make_celery() -> Celery:
    settings = get_settings()
    app = jobs.celery_app()
    app.conf.update(
        include=["worker.tasks"],
        beat_schedule={
            "start-due-periods": {
                "task": "worker.tasks.start_due_periods",
                "schedule": settings.beat_interval_seconds,
            },
            "sweep": {
                "task": "worker.tasks.sweep",
                "schedule": settings.sweep_interval_seconds,
            },
            "fold-clicks": {
                "task": jobs.FOLD_CLICKS,
                "schedule": settings.click_sweep_seconds,
                "kwargs": {"chain": False},  # a sweep: it must not start a second chain
            },
            "guard-campaigns": {
                "task": "worker.tasks.guard_campaigns",
                "schedule": settings.guard_interval_seconds,
            },
            "refresh-reports": {
                "task": "worker.tasks.refresh_reports",
                "schedule": settings.report_refresh_seconds,
            },
            "poll-inbound-mailbox": {
                "task": "worker.tasks.poll_inbound_mailbox",
                "schedule": settings.inbound_poll_seconds,
            },
            "apply-retention": {
                "task": "worker.tasks.apply_retention",
                "schedule": 3600.0,
            },
        },
    )
    return app


celery_app = make_celery()
