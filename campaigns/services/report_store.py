"""The lift report, materialized: computed by the workers as periods close and feedback folds,
stored with a fingerprint of everything it read (its mark), and served as stored.

Computing a report takes seconds (posterior summaries by Monte Carlo over every arm of every
segment; at millions of sends, the ledger's GROUP BY); serving a stored one takes milliseconds,
whatever the campaign's size. A read:

- finds a stored report whose mark is the data's mark: it is exact, served as "current";
- finds one that fell behind its data (sends or feedback since) but was computed less than
  MAB_REPORT_MAX_BEHIND_SECONDS ago: served as "behind", saying when it was computed, and a worker
  is asked to recompute it;
- finds none, or an older one, or is asked for a `fresh` one: computes it now, stores and serves it.

Beat's `refresh-reports` (every MAB_REPORT_REFRESH_SECONDS) recomputes every report that fell
behind, and the report of a campaign that has periods but none stored yet, at most every 10 x the
report's own compute time (a 20-second report is recomputed at most every 200 s: a tenth of a core),
so readers mostly get a current report without waiting for it.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

from campaigns import jobs
from campaigns.db import session_scope, snapshot_scope
from campaigns.models import utcnow
from campaigns.repositories import reports as report_repo
from campaigns.services import campaigns as campaign_service
from campaigns.services import reports
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

# Bump when the report's content changes for the same data: stored reports are then recomputed.
REPORT_FORMAT = 3
REFRESH_BACKOFF = 10.0  # a report is recomputed at most every REFRESH_BACKOFF x its compute time
ASK_AGAIN_SECONDS = 3.0  # a read of a report behind asks the workers at most this often (a recompute takes seconds)


@lru_cache(maxsize=1)
def _package_version() -> str:
    try:
        return version("mab-campaigns")
    except PackageNotFoundError:  # a source tree that is not installed
        return "source"


def mark(session, campaign_id: int) -> str:
    """The fingerprint of everything the report of `campaign_id` reads (and of the code and settings
    that shape it): equal marks, equal reports."""
    s = get_settings()
    facts = [REPORT_FORMAT, _package_version(), s.report_sequential_tuning_sends, s.report_projection_periods,
             report_repo.input_facts(session, campaign_id)]
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Served:
    """A report's JSON as served, and how fresh it is."""

    body: str
    freshness: dict

    def as_dict(self) -> dict:
        return json.loads(self.body)


def compute(campaign_id: int) -> dict:
    """Compute the report from one consistent snapshot of the database and store it. Returns the
    stored row's fields."""
    started = time.perf_counter()
    with snapshot_scope() as session:
        computed_at = utcnow()
        row = {"campaign_id": campaign_id, "mark": mark(session, campaign_id), "computed_at": computed_at}
        # allow_nan=False as the API's JSON responses: a NaN in the report is a bug, never sent as is
        row["report"] = json.dumps(reports.lift_report(session, campaign_id), allow_nan=False, separators=(",", ":"))
    row["compute_seconds"] = round(time.perf_counter() - started, 3)
    with session_scope() as session:
        report_repo.store_report(session, row)
    log.info("report of campaign %s computed in %.2f s", campaign_id, row["compute_seconds"],
             extra={"campaign_id": campaign_id})
    return row


_asked: dict[int, float] = {}


def _ask_workers(campaign_id: int) -> bool:
    """Ask a worker to recompute the report, at most every ASK_AGAIN_SECONDS per process."""
    now = time.monotonic()
    if now - _asked.get(campaign_id, -ASK_AGAIN_SECONDS) < ASK_AGAIN_SECONDS:
        return True
    _asked[campaign_id] = now
    return jobs.refresh_report(campaign_id)


def _freshness(state: str, computed_at: datetime, seconds: float, detail: str) -> dict:
    return {"state": state, "computed_at": computed_at.isoformat(), "compute_seconds": seconds, "detail": detail}


def read(campaign_id: int, fresh: bool = False) -> Served:
    """The report of `campaign_id` as the API, the CLI and the exports serve it (see the module)."""
    with session_scope() as session:
        campaign_service.get(session, campaign_id)  # NotFound for an unknown campaign
        stored = report_repo.stored_report(session, campaign_id)
        now_mark = mark(session, campaign_id)
        if stored is not None and not fresh:
            age = (utcnow() - stored.computed_at).total_seconds()
            if stored.mark == now_mark:
                return _served(stored.report, _freshness(
                    "current", stored.computed_at, stored.compute_seconds,
                    "nothing the report reads has changed since it was computed"))
            if age < get_settings().report_max_behind_seconds:
                asked = _ask_workers(campaign_id)
                return _served(stored.report, _freshness(
                    "behind", stored.computed_at, stored.compute_seconds,
                    f"computed {age:.0f} s ago; newer sends or feedback have arrived since. "
                    + ("The workers are recomputing it: read it again in a moment, or ask for ?fresh=true."
                       if asked else "No worker could be asked to recompute it (the broker is down): "
                       "ask for ?fresh=true to compute it now.")))
    row = compute(campaign_id)
    return _served(row["report"], _freshness("current", row["computed_at"], row["compute_seconds"],
                                             "computed for this read"))


def _served(body: str, freshness: dict) -> Served:
    # The stored JSON is an object: the freshness goes in as its first field, without parsing it.
    return Served('{"freshness":' + json.dumps(freshness) + "," + body[1:], freshness)


def refresh(campaign_id: int) -> str:
    """Worker task: recompute the stored report unless it is current."""
    with session_scope() as session:
        stored = report_repo.stored_report(session, campaign_id)
        if stored is not None and stored.mark == mark(session, campaign_id):
            return "current"
    row = compute(campaign_id)
    return f"recomputed in {row['compute_seconds']} s"


def refresh_behind(now: datetime | None = None) -> list[int]:
    """Beat: ask the workers to recompute every report behind its data (or never computed), each at
    most every REFRESH_BACKOFF x its compute time. Returns the campaigns asked for."""
    now = now or utcnow()
    interval = get_settings().report_refresh_seconds
    due = []
    with session_scope() as session:
        stored = report_repo.stored_marks(session)
        for campaign_id in report_repo.reportable_campaign_ids(session):
            if campaign_id in stored:
                stored_mark, computed_at, seconds = stored[campaign_id]
                if (now - computed_at).total_seconds() < max(interval, REFRESH_BACKOFF * seconds):
                    continue
                if stored_mark == mark(session, campaign_id):
                    continue
            due.append(campaign_id)
    for campaign_id in due:
        jobs.refresh_report(campaign_id)
    return due
