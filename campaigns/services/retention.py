"""Retention: what the service writes to disk (outbox emails, `mab up`'s log files) does not grow
without end. Beat runs `apply_retention` hourly; `mab outbox prune` runs the outbox part by hand."""

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from campaigns.errors import InvalidInput
from campaigns.settings import get_settings

log = logging.getLogger(__name__)
# What the outbox backend writes: `<send id>.eml`, and `.<pid>-<hex>.tmp` while writing one.
OUTBOX_SUFFIXES = (".eml", ".tmp")


@dataclass(frozen=True)
class Pruned:
    files: int
    bytes: int
    directories: int  # emptied directories removed (never the outbox itself)


def prune_outbox(directory: Path, older_than_days: float, *, dry_run: bool = False,
                 now: float | None = None) -> Pruned:
    """Delete the outbox's .eml files (and a crashed writer's .tmp files) last written more than
    `older_than_days` ago, then the directories that leaves empty. Files of other kinds are left
    alone: the outbox directory may have been pointed somewhere shared."""
    if older_than_days < 0:
        raise InvalidInput("older_than", "must be 0 or more days")
    cutoff = (time.time() if now is None else now) - older_than_days * 86_400
    files = size = emptied = 0
    if not directory.is_dir():
        return Pruned(0, 0, 0)
    for root, _dirs, names in os.walk(directory, topdown=False):
        for name in names:
            if not name.endswith(OUTBOX_SUFFIXES):
                continue
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
                if stat.st_mtime >= cutoff:
                    continue
                if not dry_run:
                    os.unlink(path)
            except FileNotFoundError:  # a concurrent prune, or the writer renamed its .tmp
                continue
            files += 1
            size += stat.st_size
        if Path(root) != directory and not dry_run:
            try:
                os.rmdir(root)  # only succeeds if empty
                emptied += 1
            except OSError:
                pass
    return Pruned(files, size, emptied)


def trim_logs(log_dir: Path, max_bytes: int) -> list[str]:
    """Each `*.log` past `max_bytes` is copied to `<name>.1` (replacing the previous copy) and
    truncated in place: the processes writing it hold it open in append mode, so they go on writing
    at its new end (a rename would leave them writing to the copy). Lines written between the copy
    and the truncation are lost; at most about 2 × max_bytes stay per log. Returns the names trimmed."""
    trimmed = []
    if max_bytes <= 0 or not log_dir.is_dir():
        return trimmed
    for path in sorted(log_dir.glob("*.log")):
        if path.stat().st_size <= max_bytes:
            continue
        with open(path, "rb") as source, open(path.with_name(path.name + ".1.tmp"), "wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
        os.replace(path.with_name(path.name + ".1.tmp"), path.with_name(path.name + ".1"))
        os.truncate(path, 0)
        trimmed.append(path.name)
    return trimmed


def apply_retention() -> dict:
    """The hourly beat job: the outbox past MAB_OUTBOX_RETENTION_DAYS, the logs past MAB_LOG_MAX_BYTES."""
    settings = get_settings()
    outbox = Pruned(0, 0, 0)
    if settings.outbox_retention_days > 0:
        outbox = prune_outbox(settings.outbox_dir, settings.outbox_retention_days)
    logs = trim_logs(settings.var_dir / "logs", settings.log_max_bytes)
    if outbox.files or logs:
        log.info("retention: deleted %s outbox files (%s bytes) older than %g days; trimmed logs: %s",
                 outbox.files, outbox.bytes, settings.outbox_retention_days, ", ".join(logs) or "none",
                 extra={"count": outbox.files})
    return {"outbox_files": outbox.files, "outbox_bytes": outbox.bytes, "logs_trimmed": logs}
