"""The chunk task when another worker holds the chunk's lease: that worker may be dead (the broker
redelivers a dead worker's task a visibility timeout after handing it out, which can be before the
dead worker's lease runs out). The task must look again after the lease, not drop the chunk."""

import subprocess
import sys
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
    with session_scope() as s:  # a worker on another machine took the chunk, then died without a word
        now = utcnow()
        assert chunk_repo.take_lease(s, first, now, now + timedelta(seconds=0.5), "elsewhere/pid:[1]:4242")

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


def test_a_chunk_held_by_a_dead_process_of_this_host_is_taken_over_at_once(sqlite_url, redis_server):
    """A worker child killed mid-chunk on this host: its process is gone, so the next task need not
    wait for its lease (two minutes by default) to run out. A live holder is still respected."""
    cid = setup_campaign(40)
    pid = new_period(cid)
    chunk_ids: list[int] = []
    periods.coordinate(pid, chunk_ids.extend)
    first = chunk_ids[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    namespace = sending.holder_id().rpartition(":")[0]
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with session_scope() as s:  # held by a live process of this host, for a long lease
            now = utcnow()
            assert chunk_repo.take_lease(s, first, now, now + timedelta(hours=1), f"{namespace}:{alive.pid}")
        assert sending.deliver_chunk(first) == sending.HELD
        with session_scope() as s:  # now by a process that exited
            chunk_repo.release(s, first)
            assert chunk_repo.take_lease(s, first, now, now + timedelta(hours=1), f"{namespace}:{dead.stdout.strip()}")
        assert sending.deliver_chunk(first) == "done"
        with session_scope() as s:
            chunk = chunk_repo.get(s, first)
            size = chunk.last_send_id - chunk.first_send_id + 1
    finally:
        alive.kill()
    assert len(outbox_files(cid, 1)) == size > 0  # the whole chunk, by the process that took over
