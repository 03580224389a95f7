"""The plan commits segment by segment and hands each segment's chunks out at once, so delivery
overlaps the rest of the plan (SQLite and PostgreSQL). What that must not break: the period
completes once, only when every segment is claimed; a coordinator that dies between segments, or a
second one beside the first, claims nobody twice and nobody not at all; a pause stops the plan and
resume goes on from where it stopped."""

from collections import Counter

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import PeriodStatus, SendChunk, SendPeriod
from campaigns.repositories import sends as send_repo
from campaigns.services import campaigns, periods, sending
from tests.campaigns.test_periods import new_period, outbox_files, sends_of, setup_campaign

N = 60  # customers, in the small campaign's two segments


def period_row(period_id: int) -> SendPeriod:
    with session_scope() as s:
        return s.get(SendPeriod, period_id)


def chunk_rows(period_id: int) -> list[SendChunk]:
    with session_scope() as s:
        stmt = select(SendChunk).where(SendChunk.period_id == period_id).order_by(SendChunk.number)
        return list(s.execute(stmt).scalars())


def assert_claimed_once(cid: int, pid: int) -> None:
    """Every customer has exactly one send, and the chunks' id ranges are disjoint and hold them all."""
    sends = sends_of(pid)
    assert sorted(Counter(s.customer_id for s in sends).values()) == [1] * N
    chunks = chunk_rows(pid)
    ranges = sorted((c.first_send_id, c.last_send_id) for c in chunks)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(any(a <= s.id <= b for a, b in ranges) for s in sends)
    p = period_row(pid)
    assert (p.total, p.chunks) == (N, len(chunks))


def deliver_all(chunk_ids: list[int]) -> list[str]:
    return [sending.deliver_chunk(c) for c in dict.fromkeys(chunk_ids)]  # each once, in order


def test_chunks_finished_while_the_plan_runs_do_not_complete_the_period_early(database_url, redis_server):
    """Here the "workers" deliver each segment's chunks the moment they are handed out, before the
    next segment is claimed. The period completes exactly when the plan ends, not when the first
    segment's chunks are all done."""
    cid = setup_campaign(N)
    pid = new_period(cid)
    seen = []

    def deliver_at_once(chunk_ids):
        outcomes = deliver_all(chunk_ids)
        p = period_row(pid)
        seen.append((outcomes, p.status, p.planned_at, p.sent, p.total, periods.progress(p)))

    assert periods.coordinate(pid, deliver_at_once) == PeriodStatus.COMPLETED
    assert len(seen) == 2  # one hand-out per segment
    for outcomes, status, planned_at, _, _, progress in seen:
        assert set(outcomes) == {"done"} and status == PeriodStatus.RUNNING and planned_at is None
        assert progress["eta_seconds"] is None  # the total is not known before the plan ends
    assert 0 < seen[0][3] == seen[0][4] < N  # the first segment delivered, the second not yet claimed
    p = period_row(pid)
    assert (p.status, p.sent, p.total) == (PeriodStatus.COMPLETED, N, N)
    assert p.planned_at is not None and p.completed_at is not None
    assert periods.progress(p)["remaining"] == 0 and periods.progress(p)["rate_per_second"] > 0
    assert_claimed_once(cid, pid)
    assert len(outbox_files(cid, 1)) == N


def test_a_coordinator_that_dies_between_segments_resumes_where_it_stopped(database_url, redis_server,
                                                                          monkeypatch):
    cid = setup_campaign(N)
    pid = new_period(cid)
    claim, calls = send_repo.claim_sends, []

    def second_claim_fails(*args, **kwargs):
        calls.append(args[3])  # the segment
        if len(calls) == 2:
            raise OSError("disk full")
        return claim(*args, **kwargs)

    monkeypatch.setattr(send_repo, "claim_sends", second_claim_fails)
    first_run: list[int] = []
    with pytest.raises(OSError, match="disk full"):
        periods.coordinate(pid, first_run.extend)
    # the first segment's claim committed with its chunks, which went out; the second rolled back
    after_crash = sends_of(pid)
    assert first_run and {s.segment_id for s in after_crash} == {calls[0]}
    p = period_row(pid)
    assert (p.status, p.planned_at, p.total, p.chunks) == (PeriodStatus.RUNNING, None, len(after_crash), len(first_run))

    monkeypatch.setattr(send_repo, "claim_sends", claim)
    second_run: list[int] = []
    assert periods.coordinate(pid, second_run.extend) == f"fanned out {len(second_run)} chunks"
    assert second_run[:len(first_run)] == first_run  # handed out again: nobody had delivered them
    assert_claimed_once(cid, pid)
    assert {s.customer_id: s.id for s in sends_of(pid) if s.segment_id == calls[0]} == \
        {s.customer_id: s.id for s in after_crash}  # the first segment's claims were kept, not redone
    assert sending.deliver_chunk(second_run[0]) == "done"
    p = period_row(pid)
    progress = periods.progress(p)  # planned, part delivered: an ETA for the rest
    assert progress["remaining"] == N - p.sent > 0 and progress["eta_seconds"] > 0
    assert deliver_all(second_run)[-1] == "done; period completed"
    assert len(outbox_files(cid, 1)) == N


def test_a_redelivered_coordinator_beside_the_first_claims_nobody_twice(database_url, redis_server):
    """The broker hands `run_period` to a second worker while the first is between two segments."""
    cid = setup_campaign(N)
    pid = new_period(cid)
    handed: list[list[int]] = []
    second: list[str] = []

    def enqueue(chunk_ids):
        handed.append(chunk_ids)
        if len(handed) == 1:
            second.append(periods.coordinate(pid, handed.append))

    first = periods.coordinate(pid, enqueue)
    # the second coordinator handed out the first segment's chunks again, claimed the second
    # segment and closed the plan; the first then found the second segment claimed and skipped it
    assert len(handed) == 3 and handed[1] == handed[0]
    assert second == [f"fanned out {len(handed[0]) + len(handed[2])} chunks"]
    assert first == f"fanned out {len(handed[0])} chunks"
    assert period_row(pid).planned_at is not None
    assert_claimed_once(cid, pid)
    outcomes = deliver_all([c for ids in handed for c in ids])
    assert outcomes[-1] == "done; period completed" and outcomes.count("done already") == 0
    assert len(outbox_files(cid, 1)) == N


def test_a_pause_during_the_plan_stops_it_and_resume_goes_on_from_there(database_url, redis_server, monkeypatch):
    cid = setup_campaign(N)
    pid = new_period(cid)
    handed: list[int] = []

    def pause_after_the_first_segment(chunk_ids):
        handed.extend(chunk_ids)
        with session_scope() as s:
            campaigns.transition(s, cid, "pause")

    assert periods.coordinate(pid, pause_after_the_first_segment) == "waiting: campaign is paused"
    p = period_row(pid)
    assert p.status == PeriodStatus.RUNNING and p.planned_at is None and 0 < p.total < N
    assert deliver_all(handed) == ["waiting: campaign is paused"] * len(handed)  # workers give them back

    asked = []
    monkeypatch.setattr(periods, "enqueue_run", lambda period_id: asked.append(("run", period_id)))
    monkeypatch.setattr(periods, "enqueue_chunks", lambda ids: asked.append(("chunks", ids)))
    with session_scope() as s:
        campaigns.transition(s, cid, "resume")
    assert asked == [("run", pid)]  # not planned yet: the coordinator again, not only the chunks

    rest: list[int] = []
    assert periods.coordinate(pid, rest.extend).startswith("fanned out")
    assert rest[:len(handed)] == handed
    assert_claimed_once(cid, pid)
    assert deliver_all(rest)[-1] == "done; period completed"
    assert len(outbox_files(cid, 1)) == N
