"""Clicks go through a Redis stream, not one Celery task each (campaigns/services/clicks.py): an
accepted click is never lost and never counted twice, whatever happens to the worker folding it."""

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from campaigns.db import session_scope
from campaigns.models import Event, Send
from campaigns.services import clicks, events
from tests.api.test_events_api import QUEUE, queued_tasks, run_worker
from tests.api.test_tracking_api import BROWSER, age_sends, sent_to_many


def click_all(api, tokens: dict[int, list[str]], link: int = 1) -> None:
    for links in tokens.values():
        r = api.client.get(f"/t/{links[link]}", headers={"User-Agent": BROWSER}, follow_redirects=False)
        assert r.status_code == 307


def stored_clicks() -> tuple[int, int]:
    """(click events stored, clicks counted on the sends)."""
    with session_scope() as s:
        return (s.execute(select(func.count()).select_from(Event).where(Event.type == "click")).scalar_one(),
                s.execute(select(func.sum(Send.clicks))).scalar_one() or 0)


@pytest.fixture
def clicked(api, queue):
    """20 sends, delivered an hour ago, each clicked once; the clicks wait in the stream."""
    _, tokens = sent_to_many(api, 20)
    queue.delete(QUEUE)  # the period's own task
    age_sends()
    click_all(api, tokens)
    assert queue.xlen(clicks.STREAM) == 20
    return tokens


def test_many_clicks_schedule_one_fold_which_folds_them_all_in_batches(clicked, queue, settings_env):
    assert [name for name, _ in queued_tasks(queue)] == ["worker.tasks.fold_clicks"]
    settings_env(MAB_CLICK_FOLD_BATCH=7)
    assert run_worker(queue) == [{"clicks": 20, "batches": 3}]
    assert stored_clicks() == (20, 20)
    assert queue.xlen(clicks.STREAM) == 0  # folded entries leave the stream
    assert queue.xpending(clicks.STREAM, clicks.GROUP)["pending"] == 0


def test_a_click_during_a_fold_schedules_the_next_one(api, clicked, queue):
    run_worker(queue)  # the fold cleared the flag before reading
    click_all(api, {0: next(iter(clicked.values()))}, link=2)
    assert [name for name, _ in queued_tasks(queue)] == ["worker.tasks.fold_clicks"]
    run_worker(queue)
    assert stored_clicks() == (21, 21)


def test_a_worker_dying_mid_batch_loses_nothing(clicked, queue, settings_env):
    # A worker read 8 clicks and died before its transaction committed: they are pending in its name.
    clicks._ensure_group(queue)
    [(_, taken)] = queue.xreadgroup(clicks.GROUP, "dead-worker", {clicks.STREAM: ">"}, count=8)
    assert len(taken) == 8
    assert clicks.fold("live-worker") == {"clicks": 12, "batches": 1}  # not yet idle long enough: left alone
    assert stored_clicks() == (12, 12)
    settings_env(MAB_CLICK_CLAIM_IDLE_SECONDS=0.001)
    assert clicks.fold("live-worker") == {"clicks": 8, "batches": 1}  # claimed from the dead worker
    assert stored_clicks() == (20, 20)
    assert queue.xlen(clicks.STREAM) == 0 and queue.xpending(clicks.STREAM, clicks.GROUP)["pending"] == 0


def test_a_batch_that_fails_stays_pending_and_is_folded_once_by_the_retry(clicked, queue, monkeypatch):
    fold_events = events.process_events
    calls = []

    def database_gone_once(session, payload):
        calls.append(len(payload))
        if len(calls) == 1:
            fold_events(session, payload)  # its writes roll back with the transaction
            raise OperationalError("UPDATE send", {}, Exception("server closed the connection"))
        return fold_events(session, payload)

    monkeypatch.setattr(events, "process_events", database_gone_once)
    with pytest.raises(OperationalError):
        clicks.fold("worker-1")
    assert stored_clicks() == (0, 0)
    assert queue.xpending(clicks.STREAM, clicks.GROUP)["pending"] == 20  # still there, in worker-1's name
    assert clicks.fold("worker-1") == {"clicks": 20, "batches": 1}  # the retry reads its own pending first
    assert calls == [20, 20] and stored_clicks() == (20, 20)


def test_folding_the_same_clicks_twice_counts_them_once(clicked, queue):
    entries = queue.xrange(clicks.STREAM)
    clicks.fold("worker-1")
    for _, fields in entries:  # the same entries again, e.g. claimed from a worker that had committed
        queue.xadd(clicks.STREAM, fields)
    assert clicks.fold("worker-2") == {"clicks": 20, "batches": 1}
    assert stored_clicks() == (20, 20)


def test_with_redis_down_a_click_is_a_503_and_nothing_is_recorded(api, clicked, queue, settings_env):
    settings_env(MAB_REDIS_URL="redis://127.0.0.1:1/0")
    links = next(iter(clicked.values()))
    r = api.client.get(f"/t/{links[0]}", follow_redirects=False)
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
    assert queue.xlen(clicks.STREAM) == 20


def test_forgotten_consumers_are_removed_but_not_ones_with_pending_clicks(clicked, queue, monkeypatch):
    clicks._ensure_group(queue)
    queue.xgroup_createconsumer(clicks.STREAM, clicks.GROUP, "gone-idle")
    queue.xreadgroup(clicks.GROUP, "gone-busy", {clicks.STREAM: ">"}, count=1)
    monkeypatch.setattr(clicks, "FORGET_CONSUMER_MS", 0)
    clicks._forget_idle_consumers(queue, "me")
    names = {c["name"].decode() for c in queue.xinfo_consumers(clicks.STREAM, clicks.GROUP)}
    assert names == {"gone-busy"}
