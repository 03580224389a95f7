"""The chunk task when another worker holds the chunk's lease: that worker may be dead (the broker
redelivers a dead worker's task a visibility timeout after handing it out, which can be before the
dead worker's lease runs out). The task must look again after the lease, not drop the chunk."""

import time
from datetime import timedelta

import pytest
from celery.exceptions import Retry

from campaigns.db import session_scope
from campaigns.models import utcnow
from campaigns.repositories import chunks as chunk_repo
from campaigns.services import periods, sending
from campaigns.settings import get_settings
from tests.campaigns.test_periods import new_period, outbox_files, setup_campaign
from worker import tasks


def test_a_chunk_held_by_a_dead_worker_is_looked_at_again_after_its_lease(sqlite_url, redis_server, monkeypatch,
                                                                          request):
    monkeypatch.setenv("MAB_CHUNK_LEASE_SECONDS", "0.5")
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)  # no later test may see the short lease
    cid = setup_campaign(40)
    pid = new_period(cid)
    chunk_ids: list[int] = []
    periods.coordinate(pid, chunk_ids.extend)
    first = chunk_ids[0]
    with session_scope() as s:  # a worker took the chunk, then died without a word
        now = utcnow()
        assert chunk_repo.take_lease(s, first, now, now + timedelta(seconds=0.5))

    retries = []

    def retry(**kwargs):
        retries.append(kwargs)
        raise Retry("looked too early", None)

    monkeypatch.setattr(tasks.deliver_chunk, "retry", retry)
    with pytest.raises(Retry):
        tasks.deliver_chunk.run(first)  # the redelivered task, while the dead worker's lease holds
    assert retries == [{"countdown": 1.5}]  # the lease, plus a second
    assert outbox_files(cid, 1) == []

    time.sleep(0.6)  # the retry's countdown (shortened): the lease has run out
    assert tasks.deliver_chunk.run(first) == "done"
    assert tasks.deliver_chunk.run(first) == sending.deliver_chunk(first) == "done already"
    assert len(retries) == 1
