"""One logging setup for the API, the worker, beat and the CLI: JSON lines (or text) on stderr.

Every line is one object: time (UTC, ISO 8601), level, logger, message, and the context of the work
it belongs to (task, task_id, campaign_id, period_id, chunk_id, route, …) taken from `log_context`
and from a whitelist of `extra=` keys. Nothing else of a record is written: Celery, for instance,
passes task arguments in `extra`, and those may hold customer data.

Personal data stays out: email addresses are masked in every message and traceback, the SQL
parameters SQLAlchemy puts in its error messages are dropped, SQLAlchemy's statement echo is held at
WARNING (it would log bound parameters, emails among them), and uvicorn's access log (client IP
addresses, raw paths with signed tokens) is replaced by the API's own request line, which names the
route template and never the path.
"""

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

from campaigns.settings import get_settings

# Keys a line may carry besides time/level/logger/message. Ids and measurements only.
CONTEXT_KEYS = frozenset({
    "task", "task_id", "state", "duration_ms", "campaign_id", "period_id", "period_number", "chunk_id",
    "segment", "route", "method", "status", "rule", "rate", "threshold", "sends", "count", "reason", "pid",
})

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mab_log_context", default=None)

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
HANDLER_NAME = "mab"
QUIET = ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.pool", "httpx", "httpcore", "multipart")


def redact(text: str) -> str:
    """Mask email addresses and drop SQL parameters (they may hold any customer field)."""
    if "[parameters:" in text:
        text = SQL_PARAMETERS.sub("[parameters: <hidden>]", text)
    return EMAIL.sub("<email>", text) if "@" in text else text


@contextlib.contextmanager
def log_context(**values) -> Iterator[None]:
    """Add context to every line logged inside the block (this thread or task only)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind_context(**values) -> contextvars.Token:
    """Like `log_context`, for callers that open and close in two places (Celery's prerun/postrun)."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in values.items() if v is not None}})


def reset_context(token: contextvars.Token | None = None) -> None:
    if token is None:
        _context.set({})
    else:
        with contextlib.suppress(ValueError):  # a token from another context: start afresh
            _context.reset(token)
            return
        _context.set({})


def _fields(record: logging.LogRecord) -> dict:
    out = dict(_context.get() or {})
    for key in CONTEXT_KEYS.intersection(record.__dict__):
        if record.__dict__[key] is not None:
            out[key] = record.__dict__[key]
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_fields(record),
        }
        if record.exc_info:
            line["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        fields = _fields(record)
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return text


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name(HANDLER_NAME)
    return handler


def configure_logging(level: str | int | None = None, fmt: str | None = None, stream: TextIO | None = None,
                      default_level: str | None = None) -> None:
    """Route every logger through one handler on the root logger. Safe to call more than once (the
    last call wins): uvicorn configures its own loggers before it imports the app, and Celery hands
    its `setup_logging` signal to us. `default_level` replaces MAB_LOG_LEVEL's default when the
    variable is not set (the CLI: WARNING, so its own output is not buried under INFO lines)."""
    settings = get_settings()
    fmt = fmt or settings.log_format
    if level is None and default_level and "log_level" not in settings.model_fields_set:
        level = default_level
    level = level or settings.log_level
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier call, and a basicConfig() stream handler
        if old.get_name() == HANDLER_NAME or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(make_handler(fmt, stream))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "celery", "celery.task", "celery.redirected"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True  # client IPs and raw paths; api.app logs the request line instead
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
