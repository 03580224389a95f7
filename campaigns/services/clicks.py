"""Clicks from tracking links: recorded in a Redis stream by the redirect, folded in batches by workers.

Why not one Celery task per click, like the other events: a click is the hot path (a newsletter
landing brings hundreds per second), and publishing a task costs about a millisecond of the API's CPU,
more than the rest of the redirect. An `XADD` to a stream costs a tenth of that, and one `fold_clicks`
task folds everything waiting in batches of up to MAB_CLICK_FOLD_BATCH through the same
`events.process_events` as every other event (deduplication, bot rules, attribution).

Nothing accepted is lost:
- a click is accepted once `XADD` returned (the redirect answers only then; with Redis down it is a
  503, as for every other event);
- the folder reads through a consumer group: an entry read but not yet folded stays pending, and is
  removed (`XACK` + `XDEL`) only after its batch committed. A worker that dies mid-batch leaves its
  entries pending; the next fold claims them once they have been idle MAB_CLICK_CLAIM_IDLE_SECONDS
  (`XAUTOCLAIM`). Folding a batch twice is harmless: event ids are unique in the database.
- who folds: a chain of `fold_clicks` tasks, one every FOLD_DELAY_SECONDS while clicks flow. A
  flag in Redis says a chain is alive. The redirect sets it with `SET NX` in the same round trip as
  its `XADD`, and only the click that found no chain sends the first task. Each fold that found
  clicks keeps the flag and schedules the next fold from the worker, so under steady traffic the API
  publishes no task at all (a Celery publish in the API process stalled its event loop for up to
  40 ms). A fold that found nothing clears the flag and looks once more, for a click that arrived
  meanwhile and trusted the chain. Beat also folds every MAB_CLICK_SWEEP_SECONDS, without starting
  a chain, for the clicks of a chain that died with its worker (the flag expires on its own).
"""

import asyncio
import logging
import os
import socket
import uuid
import weakref
from datetime import datetime

import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from campaigns import jobs
from campaigns.db import session_scope
from campaigns.services import events
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

STREAM = "mab:clicks"
GROUP = "folders"
FOLD_SCHEDULED = "mab:clicks:fold-scheduled"
FOLD_DELAY_SECONDS = 1.0  # clicks gather this long into one fold's first batch
REDIS_CONNECTIONS = 32  # per API process: a click holds one for a single round trip
FORGET_CONSUMER_MS = 3_600_000  # a consumer with nothing pending and idle this long is forgotten


def _url() -> str:
    return get_settings().broker_url()


# Append the click and claim the right to schedule the fold, in one round trip. A script, not a
# pipeline: redis-py's asyncio pipeline costs twice the CPU of one command, on the hottest path.
RECORD_SCRIPT = """
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
return redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[1])
"""
_async_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> {url: script}


def _record_script():
    """One client (and connection pool) per event loop and Redis URL: uvicorn has one loop, every
    TestClient its own (an asyncio connection belongs to the loop that opened it)."""
    per_url = _async_scripts.setdefault(asyncio.get_running_loop(), {})
    url = _url()
    if url not in per_url:
        # A bounded pool that makes a request wait for a connection: when Redis stalls for a moment,
        # an unbounded pool opens one connection per waiting click until Redis refuses new clients,
        # turning a pause into a burst of 503s.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_CONNECTIONS, timeout=2, socket_timeout=2, socket_connect_timeout=2)
        per_url[url] = aioredis.Redis(connection_pool=pool).register_script(RECORD_SCRIPT)
    return per_url[url]


async def record(send_id: int, link: int, user_agent: str | None, occurred_at: datetime) -> bool:
    """Append one click to the stream. True when no fold chain was running: the caller starts one.
    Raises redis errors when Redis is unavailable (nothing was recorded)."""
    args = [flag_seconds(), "event_id", f"click-{uuid.uuid4().hex}", "send_id", send_id, "link", link,
            "occurred_at", occurred_at.isoformat(), "user_agent", user_agent or ""]
    return await _record_script()(keys=[STREAM, FOLD_SCHEDULED], args=args) is not None


def flag_seconds() -> int:
    """How long the flag outlives the last fold that set it: a chain that died with its worker
    leaves its clicks to beat's sweep for this long at most, then the next click starts a new one."""
    return max(int(get_settings().click_sweep_seconds * 2), 10)


def schedule_fold() -> None:
    jobs.send(jobs.FOLD_CLICKS, countdown=FOLD_DELAY_SECONDS)


def _event(fields: dict[bytes, bytes]) -> dict:
    """A stream entry as `process_events` takes it (what EventIn.model_dump(mode="json") gives)."""
    f = {k.decode(): v.decode() for k, v in fields.items()}
    return {"event_id": f["event_id"], "type": "click", "send_id": int(f["send_id"]), "link": int(f["link"]),
            "occurred_at": f["occurred_at"], "user_agent": f["user_agent"] or None,
            "campaign_id": None, "customer_external_id": None, "revenue": 0.0}


def consumer_name() -> str:
    """Stable for a worker process: its own pending entries are read back first after a retry."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _ensure_group(client: redis.Redis) -> None:
    try:  # from id 0: clicks recorded before any folder existed are folded too
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _next_batch(client: redis.Redis, consumer: str, batch: int, own_pending: bool) -> tuple[list, bool]:
    """(entries, whether they are new): this consumer's own pending entries (after a failed fold),
    then entries idle in a dead consumer's hands, then new ones."""
    if own_pending:
        [(_, entries)] = client.xreadgroup(GROUP, consumer, {STREAM: "0"}, count=batch) or [(None, [])]
        if entries:
            return entries, False
    idle_ms = int(get_settings().click_claim_idle_seconds * 1000)
    _, claimed, *_ = client.xautoclaim(STREAM, GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=batch)
    if claimed:
        return claimed, False
    got = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=batch)
    return (got[0][1] if got else []), True


def fold(consumer: str | None = None, *, chain: bool = True) -> dict:
    """Fold the clicks waiting in the stream, batch by batch; each batch commits before its entries
    leave the stream. With `chain` (the tasks the clicks scheduled), keep the chain going while
    clicks flow; beat's sweep folds without it. Returns counts for the task's log."""
    consumer = consumer or consumer_name()
    client = redis.Redis.from_url(_url(), socket_timeout=10, socket_connect_timeout=5)
    try:
        _ensure_group(client)
        folded, batches = _fold_waiting(client, consumer)
        if chain and folded:  # clicks are flowing: the worker, not the API, schedules the next fold
            client.set(FOLD_SCHEDULED, 1, ex=flag_seconds())
            schedule_fold()
        elif chain:
            client.delete(FOLD_SCHEDULED)
            # a click recorded after the read above found the flag still set and scheduled nothing
            more, more_batches = _fold_waiting(client, consumer)
            folded, batches = folded + more, batches + more_batches
            if more and client.set(FOLD_SCHEDULED, 1, nx=True, ex=flag_seconds()):
                schedule_fold()
        _forget_idle_consumers(client, consumer)
        return {"clicks": folded, "batches": batches}
    finally:
        client.close()


def _fold_waiting(client: redis.Redis, consumer: str) -> tuple[int, int]:
    """(clicks folded, batches). It stops after a batch of new clicks that was not full: the clicks
    that trickle in meanwhile are the next fold's, one transaction for a whole delay's worth,
    instead of a transaction for every few."""
    size = get_settings().click_fold_batch
    folded, batches, own_pending = 0, 0, True
    while True:
        entries, new = _next_batch(client, consumer, size, own_pending)
        own_pending = False
        if not entries:
            return folded, batches
        _fold_batch(client, entries)
        folded += sum(1 for _, fields in entries if fields is not None)
        batches += 1
        if new and len(entries) < size:
            return folded, batches


def _fold_batch(client: redis.Redis, entries: list) -> None:
    ids = [entry_id for entry_id, fields in entries if fields is not None]
    deleted = [entry_id for entry_id, fields in entries if fields is None]  # trimmed meanwhile
    payload = [_event(fields) for _, fields in entries if fields is not None]
    if payload:
        with session_scope() as session:
            events.process_events(session, payload)
    pipe = client.pipeline(transaction=False)
    pipe.xack(STREAM, GROUP, *ids, *deleted)
    if ids:
        pipe.xdel(STREAM, *ids)
    pipe.execute()


def _forget_idle_consumers(client: redis.Redis, me: str) -> None:
    """Every worker process is a consumer of the group; the ones long gone, with nothing pending,
    are removed so the group does not grow with every restart."""
    for c in client.xinfo_consumers(STREAM, GROUP):
        name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
        if name != me and c["pending"] == 0 and c["idle"] >= FORGET_CONSUMER_MS:
            client.xgroup_delconsumer(STREAM, GROUP, name)


def waiting(client: redis.Redis) -> int:
    """Clicks recorded and not yet folded (new and pending): the stream's length, since folded
    entries are deleted."""
    return client.xlen(STREAM)
