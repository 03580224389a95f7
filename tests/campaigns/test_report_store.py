"""The materialized report (services/report_store.py): computed once, served as stored while its
data has not changed, marked `behind` when it has, recomputed by the workers or on demand, and
always equal to the report computed from the database at the time it was computed."""

import json
from datetime import timedelta

import pytest
import redis

from campaigns.db import session_scope
from campaigns.jobs import QUEUE
from campaigns.models import ReportSnapshot, utcnow
from campaigns.services import report_store
from campaigns.settings import get_settings
from tests.campaigns.test_periods import setup_campaign
from tests.campaigns.test_report import all_sends, feedback, report, run_periods


def comparable(r: dict) -> dict:
    """A report without what differs between two computations of the same data."""
    return {k: v for k, v in r.items() if k not in ("generated_at", "freshness")}


@pytest.fixture(autouse=True)
def forget_asks(monkeypatch):
    """Each test's database numbers its campaigns from 1: a read must not skip asking the workers
    because an earlier test's campaign 1 was asked about seconds ago."""
    monkeypatch.setattr(report_store, "_asked", {})


@pytest.fixture
def campaign(database_url, redis_server):
    cid = setup_campaign(300, holdout_share=0.2)
    run_periods(cid, 1)
    feedback(all_sends(cid), seed=3)
    return cid


def queued_refreshes(redis_url: str) -> list[int]:
    r = redis.Redis.from_url(redis_url)
    try:
        tasks = [json.loads(m) for m in r.lrange(QUEUE, 0, -1)]
        return [json.loads(t["headers"]["argsrepr"])  # "[3]": the task's arguments
                for t in tasks if t["headers"]["task"] == "worker.tasks.refresh_report"]
    finally:
        r.delete(QUEUE)
        r.close()


def test_the_first_read_computes_and_stores_and_the_next_reads_serve_it(campaign):
    first = report_store.read(campaign)
    assert first.freshness["state"] == "current" and first.freshness["detail"] == "computed for this read"
    assert comparable(first.as_dict()) == comparable(report(campaign))  # what the database says now
    again = report_store.read(campaign)
    assert again.freshness["state"] == "current"
    assert "nothing the report reads has changed" in again.freshness["detail"]
    assert again.as_dict()["generated_at"] == first.as_dict()["generated_at"]  # served, not recomputed
    assert json.loads(again.body)["freshness"] == again.freshness  # the JSON carries it as its first field
    assert again.body.startswith('{"freshness":')


def test_new_feedback_makes_it_behind_until_the_workers_recompute_it(campaign, redis_server):
    before = report_store.read(campaign).as_dict()
    queued_refreshes(redis_server.url)  # nothing else in the queue
    run_periods(campaign, 1)  # a new period: new sends, new counters
    behind = report_store.read(campaign)
    assert behind.freshness["state"] == "behind"
    assert "newer sends or feedback" in behind.freshness["detail"]
    assert comparable(behind.as_dict()) == comparable(before)  # the stored numbers, as they were
    assert queued_refreshes(redis_server.url) == [[campaign]]  # a worker was asked

    assert report_store.refresh(campaign).startswith("recomputed in")  # what the worker runs
    after = report_store.read(campaign)
    assert after.freshness["state"] == "current"
    assert after.as_dict()["periods"] == 2 and comparable(after.as_dict()) == comparable(report(campaign))
    assert report_store.refresh(campaign) == "current"  # nothing new: nothing recomputed


def test_feedback_alone_makes_it_behind(campaign):
    report_store.read(campaign)
    sends = [s for s in all_sends(campaign) if s.first_click_at is None]
    feedback(sends, seed=11)  # clicks and conversions on sends that had none
    assert report_store.read(campaign).freshness["state"] == "behind"


def test_fresh_and_a_report_behind_for_too_long_are_computed_on_the_read(campaign, monkeypatch):
    report_store.read(campaign)
    run_periods(campaign, 1)
    assert report_store.read(campaign, fresh=True).as_dict()["periods"] == 2
    run_periods(campaign, 1)
    monkeypatch.setenv("MAB_REPORT_MAX_BEHIND_SECONDS", "0")
    get_settings.cache_clear()
    try:
        served = report_store.read(campaign)
        assert served.freshness == {**served.freshness, "state": "current", "detail": "computed for this read"}
        assert served.as_dict()["periods"] == 3
    finally:
        monkeypatch.delenv("MAB_REPORT_MAX_BEHIND_SECONDS")
        get_settings.cache_clear()


def test_beat_asks_for_the_reports_behind_and_only_those(campaign, redis_server):
    queued_refreshes(redis_server.url)
    assert report_store.refresh_behind() == [campaign]  # periods, but no report stored yet
    report_store.refresh(campaign)
    later = utcnow() + timedelta(hours=1)
    assert report_store.refresh_behind(later) == []  # stored and current
    run_periods(campaign, 1)
    assert report_store.refresh_behind() == []  # behind, but computed a moment ago: not yet
    assert report_store.refresh_behind(later) == [campaign]
    assert queued_refreshes(redis_server.url) == [[campaign]] * 2


def test_an_older_computation_never_replaces_a_newer_one(campaign):
    newer = report_store.compute(campaign)
    from campaigns.repositories import reports as report_repo

    with session_scope() as s:
        report_repo.store_report(s, {**newer, "computed_at": newer["computed_at"] - timedelta(seconds=5),
                                     "mark": "older", "report": "{}"})
    with session_scope() as s:
        stored = s.get(ReportSnapshot, campaign)
        assert (stored.mark, stored.report) == (newer["mark"], newer["report"])


def test_an_unknown_campaign_is_a_404(database_url):
    from campaigns.errors import NotFound

    with pytest.raises(NotFound):
        report_store.read(987654)
