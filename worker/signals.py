"""Celery signal hooks: logging set up our way, task latency and outcome metrics, log context.

Hooks, not task code: the tasks stay thin, and every task (the beat ones too) is measured the same.
"""

import inspect
import logging
import time
from functools import lru_cache

from celery import signals

from campaigns import metrics
from campaigns.logging_config import bind_context, configure_logging, reset_context
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

CONTEXT_ARGS = ("campaign_id", "period_id", "chunk_id")  # task arguments worth a log field
_started: dict[str, tuple[float, object]] = {}


@signals.setup_logging.connect
def _setup_logging(loglevel=None, **_):
    """Connected, so Celery leaves the root logger to us (worker and beat alike). MAB_LOG_LEVEL
    decides; Celery's --loglevel only applies when it is more verbose."""
    level = logging.getLevelName(get_settings().log_level.upper())
    if isinstance(loglevel, int) and isinstance(level, int):
        level = min(level, loglevel)
    configure_logging(level=level)


@signals.worker_init.connect
def _worker_metrics_port(**_):
    port = get_settings().worker_metrics_port
    if port:
        metrics.serve_worker_metrics(port)
        log.info("worker metrics on port %s", port)


@lru_cache(maxsize=64)
def _context_params(task_name: str, run) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(run).parameters)
    except (TypeError, ValueError):
        return ()


def _context_of(task, args, kwargs) -> dict:
    names = _context_params(task.name, task.run)
    bound = dict(zip(names, args or (), strict=False)) | dict(kwargs or {})
    return {k: bound[k] for k in CONTEXT_ARGS if isinstance(bound.get(k), int)}


@signals.task_prerun.connect
def _task_prerun(task_id=None, task=None, args=None, kwargs=None, **_):
    token = bind_context(task=task.name, task_id=task_id, **_context_of(task, args, kwargs))
    _started[task_id] = (time.perf_counter(), token)


@signals.task_postrun.connect
def _task_postrun(task_id=None, task=None, state=None, **_):
    started, token = _started.pop(task_id, (None, None))
    seconds = time.perf_counter() - started if started is not None else None
    metrics.observe_task(task.name, state or "UNKNOWN", seconds)
    reset_context(token)
