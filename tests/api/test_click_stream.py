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


FOLD = "worker.tasks.fold_clicks"


def test_many_clicks_start_one_chain_of_folds_that_ends_when_they_stop(api, clicked, queue, settings_env):
    assert [name for name, _ in queued_tasks(queue)] == [FOLD]  # 20 clicks, one task
    settings_env(MAB_CLICK_FOLD_BATCH=7)
    assert run_worker(queue) == [{"clicks": 20, "batches": 3}]
    assert stored_clicks() == (20, 20)
    assert queue.xlen(clicks.STREAM) == 0  # folded entries leave the stream
    assert queue.xpending(clicks.STREAM, clicks.GROUP)["pending"] == 0
    # It found clicks: the worker scheduled the next fold, and a new click leaves that to the chain.
    assert [name for name, _ in queued_tasks(queue)] == [FOLD] and queue.exists(clicks.FOLD_SCHEDULED)
    click_all(api, {0: next(iter(clicked.values()))}, link=2)
    assert [name for name, _ in queued_tasks(queue)] == [FOLD]  # the API published nothing
    assert run_worker(queue) == [{"clicks": 1, "batches": 1}]
    assert run_worker(queue) == [{"clicks": 0, "batches": 0}]  # nothing left: the chain ends
    assert queued_tasks(queue) == [] and not queue.exists(clicks.FOLD_SCHEDULED)
    click_all(api, {0: list(clicked.values())[1]}, link=2)  # the next click starts a new chain
    assert [name for name, _ in queued_tasks(queue)] == [FOLD]
    run_worker(queue)
    assert stored_clicks() == (22, 22)


def test_a_click_arriving_during_a_fold_is_folded_by_the_next_link_of_the_chain(api, clicked, queue, monkeypatch):
    queue.delete(QUEUE)  # the task the 20 clicks scheduled: folded by hand below
    fold_events = events.process_events
    late = next(iter(clicked.values()))[3]

    def with_a_click_meanwhile(session, payload):
        r = api.client.get(f"/t/{late}", headers={"User-Agent": BROWSER}, follow_redirects=False)
        assert r.status_code == 307
        return fold_events(session, payload)

    monkeypatch.setattr(events, "process_events", with_a_click_meanwhile)
    assert clicks.fold("worker-1") == {"clicks": 20, "batches": 1}  # a batch that was not full: done
    monkeypatch.setattr(events, "process_events", fold_events)
    assert queue.xlen(clicks.STREAM) == 1
    assert [name for name, _ in queued_tasks(queue)] == [FOLD]  # the chain's next link
    run_worker(queue)
    assert stored_clicks() == (21, 21) and queue.xlen(clicks.STREAM) == 0


def test_a_click_that_trusted_an_ending_chain_is_folded_and_continues_it(api, clicked, queue, monkeypatch):
    run_worker(queue)  # the 20 clicks; the chain's next link is queued
    queue.delete(QUEUE)
    fold_waiting = clicks._fold_waiting
    calls = []

    def click_after_the_empty_read(client, consumer):
        calls.append(1)
        got = fold_waiting(client, consumer)
        if len(calls) == 1:  # the link found nothing; a click arrives before the flag is cleared
            click_all(api, {0: next(iter(clicked.values()))}, link=2)
        return got

    monkeypatch.setattr(clicks, "_fold_waiting", click_after_the_empty_read)
    assert clicks.fold("worker-1") == {"clicks": 1, "batches": 1}  # the second look found it
    assert stored_clicks() == (21, 21)
    # one task: the click saw the flag still set and published nothing; the fold started the chain again
    assert [name for name, _ in queued_tasks(queue)] == [FOLD] and queue.exists(clicks.FOLD_SCHEDULED)


def test_beats_sweep_folds_without_starting_a_chain(clicked, queue):
    queue.delete(QUEUE, clicks.FOLD_SCHEDULED)  # as if the chain had died with its worker
    assert clicks.fold("sweeper", chain=False) == {"clicks": 20, "batches": 1}
    assert stored_clicks() == (20, 20)
    assert queued_tasks(queue) == [] and not queue.exists(clicks.FOLD_SCHEDULED)


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
