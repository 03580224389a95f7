"""Feedback in: sustained events per second through POST /events to the arm statistics, and the
click redirect's latency at a fixed offered rate, each beside a bare FastAPI app measured in the
same run (issue 4, "Feedback in"). Usage:

    nice -n 10 .venv/bin/python benchmarks/bench_events.py                  # PostgreSQL
    nice -n 10 .venv/bin/python benchmarks/bench_events.py --backends postgresql,sqlite
    nice -n 10 .venv/bin/python benchmarks/bench_events.py --quick          # a smoke run

The real stack, as `mab up` starts it (campaigns/stack.py): a redis-server, a Celery worker
(--celery-concurrency processes, default 2) and beat, and one uvicorn process serving api.app; the
database is a throwaway PostgreSQL (tests/servers.py: fsync off) or a SQLite file. Rate limits are
off (MAB_RATE_LIMIT_*=0), the request log is on (the default; --no-log-requests turns it off).
A bare FastAPI app (GET /t/{token} -> 307, POST /events that parses the JSON and answers 202) runs
under the same uvicorn command line beside it.

Setup, through the service functions and not timed: --customers customers over the 8 segments, the
demo campaign's 200 variants, one period delivered to the outbox by the Celery worker.

1. Bulk events. --events click and conversion events (3:1; conversions with revenue, a tenth of them
   named by customer + campaign, so attribution runs too), each on a random delivered send, in POSTs
   of --batch events from --clients concurrent clients (bodies prebuilt). Timed from the first POST
   to the moment the send ledger's clicks + conversions include every one of them (polled every
   0.2 s). Baseline: the same bodies to the bare app.
2. Click redirect. GET /t/{token} of random delivered sends with a browser's user agent, open loop
   at --rate requests/s for --seconds per app, in --rounds alternating slices (bare, real, bare,
   real ...) so that both see the same machine. Latency counts from the moment a request was due.
   Then again at --low-rate (100/s) for --low-seconds: the latency when the API is not saturated.
   Every redirect is a click event: the run waits (--drain-timeout) until the worker stored them.
3. Where the time goes (--no-profile skips it), timed in this process: the API's steps per batch of
   events, the worker's fold (events.process_events) step by step, the same fold with the
   statements proposed in the report patched in (PostgreSQL), the Celery task time and retries
   from the stack's /metrics and log, and the click route called in-process (with and without
   the thread pool, its parts timed) beside the bare app.

Requests go through a small HTTP/1.1 keep-alive client on asyncio (benchmarks/_http_load.py), so
the load generator costs the shared cores little. --keep-logs DIR keeps the stack's logs.

Every figure is printed with the load average at the start and the end.
"""

import argparse
import asyncio
import inspect
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http_load import (  # noqa: E402
    BROWSER,
    SEGMENTS,
    RawHTTP,
    Samples,
    Service,
    check_click_token,
    create_campaign,
    create_keys,
    import_customers,
    loadavg,
    metric_value,
    ms,
    open_loop,
    scalar,
    sent_ids,
    start_period,
    timed,
    wait_period,
)

TARGET_EVENTS_PER_S = 20_000
TARGET_P99_MS = 20.0


# ------------------------------------------------------------------------------------ events

def make_batches(n: int, batch: int, sends: list[int], campaign_id: int, customer_of: dict[int, str],
                 tag: str, seed: int = 1) -> list[list[dict]]:
    rng = random.Random(seed)
    occurred = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # after every send was delivered
    out, cur = [], []
    for i in range(n):
        sid = rng.choice(sends)
        if i % 4 != 3:
            e = {"event_id": f"{tag}-{i}", "type": "click", "send_id": sid}
        elif i % 40 == 39:  # a tenth of the conversions: named by customer + campaign (attribution)
            e = {"event_id": f"{tag}-{i}", "type": "conversion", "campaign_id": campaign_id,
                 "customer_external_id": customer_of[sid], "revenue": round(rng.uniform(5, 80), 2)}
        else:
            e = {"event_id": f"{tag}-{i}", "type": "conversion", "send_id": sid,
                 "revenue": round(rng.uniform(5, 80), 2), "occurred_at": occurred}
        cur.append(e)
        if len(cur) == batch:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def ledger_total(period_id: int) -> int:
    return int(scalar("SELECT COALESCE(SUM(clicks), 0) + COALESCE(SUM(conversions), 0) FROM send "
                      "WHERE period_id = :p", p=period_id))


async def post_bodies(client: RawHTTP, raws: list[bytes], clients: int, samples: Samples) -> int:
    """`clients` concurrent closed-loop posters over the prebuilt requests; returns the accepted count."""
    queue = list(reversed(raws))
    accepted = 0
    loop = asyncio.get_running_loop()

    async def poster():
        nonlocal accepted
        while queue:
            raw = queue.pop()
            status, body = await timed(client, raw, samples, loop.time(), timeout=300)
            if status == 202:
                accepted += json.loads(body)["accepted"]

    samples.started = loop.time()
    await asyncio.gather(*(poster() for _ in range(clients)))
    samples.ended = loop.time()
    return accepted


async def bulk_phase(svc: Service, key: str, batches: list[list[dict]], clients: int, period_id: int,
                     expected_total: int, timeout: float) -> dict:
    api = RawHTTP(svc.port, headers={"X-API-Key": key, "Content-Type": "application/json"})
    raws = [api.build("POST", "/events", json.dumps({"events": b}).encode()) for b in batches]
    samples = Samples("POST /events")
    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    t0 = loop.time()
    done = {"t": None, "last": None}

    async def watch():
        while loop.time() - t0 < timeout:
            total = await asyncio.to_thread(ledger_total, period_id)
            done["last"] = total
            if total >= expected_total:
                done["t"] = loop.time() - t0
                return
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    accepted = await post_bodies(api, raws, clients, samples)
    t_accept = loop.time() - t0
    cpu = time.process_time() - cpu0
    await watcher
    api.close()
    return {"samples": samples, "accepted": accepted, "t_accept": t_accept, "t_folded": done["t"],
            "ledger": done["last"], "driver_cpu": cpu}


async def bare_bulk(svc: Service, batches: list[list[dict]], clients: int) -> dict:
    bare = RawHTTP(svc.bare_port, headers={"Content-Type": "application/json"})
    raws = [bare.build("POST", "/events", json.dumps({"events": b}).encode()) for b in batches]
    samples = Samples("bare POST /events")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    accepted = await post_bodies(bare, raws, clients, samples)
    bare.close()
    return {"samples": samples, "accepted": accepted, "t_accept": loop.time() - t0}


# ------------------------------------------------------------------------------------ redirect

async def redirect_phase(svc: Service, tokens: list[str], rate: float, seconds: float, rounds: int) -> dict:
    real = RawHTTP(svc.port, headers={"User-Agent": BROWSER})
    bare = RawHTTP(svc.bare_port, headers={"User-Agent": BROWSER})
    out = {"real": Samples("GET /t/{token}"), "bare": Samples("bare GET /t/{token}")}
    rng = random.Random(3)
    await real.warm(8)
    await bare.warm(8)
    # a short warm-up of each (imports, first queries, thread pool), not measured
    for client in (bare, real):
        for _ in range(20):
            await client.send(client.build("GET", f"/t/{rng.choice(tokens)}"))
    out["warmup_clicks"] = 20
    cpu0 = time.process_time()
    for _ in range(rounds):
        for name, client in (("bare", bare), ("real", real)):
            part = Samples(name)

            async def fire(i, due, client=client, part=part):
                await timed(client, client.build("GET", f"/t/{rng.choice(tokens)}"), part, due, timeout=30)

            await open_loop(rate, seconds / rounds, fire, part)
            out[name].merge(part)
    out["driver_cpu"] = time.process_time() - cpu0
    out["connections"] = {"real": real.opened, "bare": bare.opened}
    real.close()
    bare.close()
    return out


# ------------------------------------------------------------------------------------ profile

class Timers:
    def __init__(self):
        self.seconds, self.calls = Counter(), Counter()
        self.originals: list[tuple[object, str, object]] = []

    def restore(self) -> None:
        for owner, name, original in reversed(self.originals):
            setattr(owner, name, original)
        self.originals.clear()

    def wrap(self, owner, name: str, label: str | None = None):
        original = getattr(owner, name)
        label = label or name
        if inspect.iscoroutinefunction(original):
            async def timed_coroutine(*a, **kw):
                t = time.perf_counter()
                try:
                    return await original(*a, **kw)
                finally:
                    self.seconds[label] += time.perf_counter() - t
                    self.calls[label] += 1

            self.originals.append((owner, name, original))
            setattr(owner, name, timed_coroutine)
            return

        def timed_call(*a, **kw):
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        self.originals.append((owner, name, original))
        setattr(owner, name, timed_call)


def profile(batches: list[list[dict]], metrics_before: str, metrics_after: str, n_bulk: int) -> float:
    """Per 5,000-event batch: what the API does with it, and what the worker's fold costs."""
    from campaigns.db import session_scope
    from campaigns.repositories import events as repo
    from campaigns.schemas import EventIn, EventsIn
    from campaigns.services import events
    from worker.tasks import process_events

    reps = len(batches)
    api = Counter()
    for b in batches:
        body = json.dumps({"events": b}).encode()
        t = time.perf_counter()
        data = json.loads(body)
        t1 = time.perf_counter()
        parsed = EventsIn.model_validate(data)
        t2 = time.perf_counter()
        events.validate_events(parsed.events)
        t3 = time.perf_counter()
        payload = [e.model_dump(mode="json") for e in parsed.events]
        t4 = time.perf_counter()
        # the real enqueue path (kombu's JSON + the Redis push), to a queue no worker reads
        process_events.apply_async(args=[payload], queue="bench-scratch")
        t5 = time.perf_counter()
        api["JSON parse (json.loads)"] += t1 - t
        api["pydantic EventsIn validation"] += t2 - t1
        api["validate_events (batch rules)"] += t3 - t2
        api["model_dump(mode='json')"] += t4 - t3
        api["Celery enqueue (serialize + Redis push)"] += t5 - t4
    import redis

    redis.Redis.from_url(os.environ["MAB_REDIS_URL"]).delete("bench-scratch")
    per = len(batches[0])
    print(f"\n  Where the time goes, per batch of {per:,} events (mean of {reps}, this process):")
    print("    API side (what POST /events does before it answers 202)")
    for k, v in api.items():
        print(f"      {k:<44} {v / reps * 1000:8.1f} ms  ({per * reps / v:>9,.0f} events/s alone)")
    total_api = sum(api.values())
    print(f"      {'sum':<44} {total_api / reps * 1000:8.1f} ms  ({per * reps / total_api:>9,.0f} events/s)")

    timers = Timers()
    for name, label in [("sends_by_id", "attribution: read the sends (by id)"),
                        ("existing_campaign_ids", "attribution: campaigns"),
                        ("sends_of_customers", "attribution: sends of customers (by customer)"),
                        ("insert_new_events", "insert_new_events (ON CONFLICT, RETURNING)"),
                        ("lock_sends", "bot bursts: lock sends"),
                        ("sends_with_links_clicked", "bot bursts: history"),
                        ("apply_clicks", "ledger: apply_clicks (UPDATE per send)"),
                        ("rebase_clicks", "ledger: rebase_clicks"),
                        ("apply_conversions", "ledger: apply_conversions (UPDATE per send)")]:
        timers.wrap(repo, name, label)
    worker = Counter()
    try:
        for b in batches:
            # what the worker gets: the API's model_dump(mode="json") of each event, through JSON
            payload = json.loads(json.dumps([EventIn(**e).model_dump(mode="json") for e in b]))
            t = time.perf_counter()
            with session_scope() as s:
                events.process_events(s, payload)
                t1 = time.perf_counter()
            worker["commit"] += time.perf_counter() - t1
            worker["process_events total"] += t1 - t
    finally:
        timers.restore()
    print("    Worker side (events.process_events in one transaction, this process)")
    total = worker["process_events total"]
    for label, sec in timers.seconds.most_common():
        print(f"      {label:<44} {sec / reps * 1000:8.1f} ms  {sec / total:6.1%}")
    rest = total - sum(timers.seconds.values())
    print(f"      {'Python: parse dates, attribute, bot rules':<44} {rest / reps * 1000:8.1f} ms  {rest / total:6.1%}")
    print(f"      {'commit':<44} {worker['commit'] / reps * 1000:8.1f} ms")
    fold = total + worker["commit"]
    print(f"      {'fold per batch':<44} {fold / reps * 1000:8.1f} ms  ({per * reps / fold:>9,.0f} events/s "
          "per worker process, alone)")
    fold_ms = fold / reps * 1000
    task = "worker.tasks.process_events"
    n = (metric_value(metrics_after, "mab_task_duration_seconds_count", task=task)
         - metric_value(metrics_before, "mab_task_duration_seconds_count", task=task))
    s = (metric_value(metrics_after, "mab_task_duration_seconds_sum", task=task)
         - metric_value(metrics_before, "mab_task_duration_seconds_sum", task=task))
    route = metric_value(metrics_after, "mab_http_request_duration_seconds_sum", route="/events", method="POST")
    route_n = metric_value(metrics_after, "mab_http_request_duration_seconds_count", route="/events", method="POST")
    states = {st: int(metric_value(metrics_after, "mab_tasks_total", task=task, state=st)
                      - metric_value(metrics_before, "mab_tasks_total", task=task, state=st))
              for st in ("SUCCESS", "RETRY", "FAILURE")}
    if n:
        print(f"    Celery, during the timed run: {int(n)} process_events task runs {states}, {s / n * 1000:.0f} ms "
              f"each ({n_bulk / s:,.0f} events per task-second; wall time on a shared core)")
    if route_n:
        print(f"    API, during the timed run: POST /events {route / route_n * 1000:.0f} ms per request inside "
              "the app (mab_http_request_duration_seconds)")
    return fold_ms


# ------------------------------------------------------------------------------------ the proposal

EVENT_COLUMNS = [("event_id", "text"), ("type", "text"), ("status", "text"), ("campaign_id", "int"),
                 ("send_id", "bigint"), ("customer_external_id", "text"), ("revenue", "float8"),
                 ("occurred_at", "timestamptz"), ("received_at", "timestamptz"), ("reason", "text"),
                 ("user_agent", "text"), ("link", "int")]


def proposed_insert_new_events(session, rows: list[dict]) -> set[str]:
    """PostgreSQL: one INSERT … SELECT FROM unnest(one array per column) ON CONFLICT DO NOTHING
    RETURNING, instead of an executemany whose 1,000-row VALUES statements psycopg must rewrite
    ($n placeholders, 12,000 per statement, never cached): 12 parameters, adapted as binary arrays.
    Rows still go in event id order (ORDER BY), so overlapping batches cannot deadlock."""
    from sqlalchemy import text

    if not rows:
        return set()
    cols = ", ".join(c for c, _ in EVENT_COLUMNS)
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in EVENT_COLUMNS)
    sql = text(f"INSERT INTO event ({cols}) SELECT * FROM unnest({arrays}) AS v({cols}) ORDER BY event_id "  # noqa: S608
               "ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
    return set(session.execute(sql, {c: [r[c] for r in rows] for c, _ in EVENT_COLUMNS}).scalars())


def proposed_lock_sends(session, new_rows: list[dict]) -> None:
    """The deadlock fix: every send the batch may update, row-locked in id order before any UPDATE
    (one statement, the ids as one array). The UPDATEs run in no particular order, and clicks and
    conversions in two statements, so two workers folding overlapping batches can otherwise each
    hold a row the other needs (PostgreSQL: "deadlock detected", the task retried after 5 s)."""
    from sqlalchemy import text

    ids = sorted({r["send_id"] for r in new_rows if r["send_id"] and r["type"] in ("click", "conversion")})
    if ids:
        session.execute(text("SELECT id FROM send WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE"),
                        {"ids": ids})


def proposed_apply(session, params: list[dict], conversions: bool) -> None:
    """PostgreSQL: one UPDATE … FROM unnest(ids, counts, …) instead of an executemany of one UPDATE
    per send (the rows are already locked by proposed_lock_sends)."""
    from sqlalchemy import text

    if not params:
        return
    ids = [p["sid"] for p in params]
    if conversions:
        session.execute(text(
            "UPDATE send SET conversions = send.conversions + v.n, revenue = send.revenue + v.rev, "
            "first_conversion_at = COALESCE(send.first_conversion_at, v.at) "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:n AS int[]), CAST(:rev AS float8[]), "
            "CAST(:at AS timestamptz[])) AS v(id, n, rev, at) WHERE send.id = v.id"),
            {"ids": ids, "n": [p["n"] for p in params], "rev": [p["rev"] for p in params],
             "at": [p["at"] for p in params]})
    else:
        session.execute(text(
            "UPDATE send SET clicks = send.clicks + v.n, first_click_at = COALESCE(send.first_click_at, v.at) "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:n AS int[]), CAST(:at AS timestamptz[])) AS v(id, n, at) "
            "WHERE send.id = v.id"),
            {"ids": ids, "n": [p["n"] for p in params], "at": [p["at"] for p in params]})


def profile_proposal(batches: list[list[dict]], current_ms: float) -> None:
    """The worker's fold again on fresh batches, with the three statements above patched in."""
    from campaigns.db import session_scope
    from campaigns.repositories import events as repo
    from campaigns.schemas import EventIn
    from campaigns.services import events

    timers = Timers()
    originals = {name: getattr(repo, name) for name in ("insert_new_events", "apply_clicks", "apply_conversions")}
    exclude_bursts = events._exclude_bursts

    def lock_then_exclude(session, new_rows, rules):
        t = time.perf_counter()
        proposed_lock_sends(session, new_rows)
        timers.seconds["proposed lock of the batch's sends (id order)"] += time.perf_counter() - t
        return exclude_bursts(session, new_rows, rules)

    events._exclude_bursts = lock_then_exclude
    repo.insert_new_events = proposed_insert_new_events
    repo.apply_clicks = lambda session, params: proposed_apply(session, params, conversions=False)
    repo.apply_conversions = lambda session, params: proposed_apply(session, params, conversions=True)
    timers.wrap(repo, "insert_new_events", "proposed insert (unnest)")
    timers.wrap(repo, "apply_clicks", "proposed apply_clicks (unnest)")
    timers.wrap(repo, "apply_conversions", "proposed apply_conversions (unnest)")
    total = 0.0
    try:
        for b in batches:
            payload = json.loads(json.dumps([EventIn(**e).model_dump(mode="json") for e in b]))
            t = time.perf_counter()
            with session_scope() as s:
                out = events.process_events(s, payload)
            total += time.perf_counter() - t
            assert out["new"] == len(b), out
    finally:
        timers.restore()
        events._exclude_bursts = exclude_bursts
        for name, fn in originals.items():
            setattr(repo, name, fn)
    reps, per = len(batches), len(batches[0])
    print(f"    Proposal (PostgreSQL; measured here, not in the product): {reps} fresh batches folded with")
    for label, sec in timers.seconds.most_common():
        print(f"      {label:<44} {sec / reps * 1000:8.1f} ms")
    print(f"      {'fold per batch, commit included':<44} {total / reps * 1000:8.1f} ms  ({per * reps / total:>9,.0f} "
          f"events/s per worker process, alone; {current_ms / (total / reps * 1000):.1f}x the current fold)")


def _scope(path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1"), (b"user-agent", BROWSER.encode())],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}


async def _asgi_get(app, path: str) -> int:
    status = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(_scope(path), receive, send)
    return status[0]


def profile_redirect(svc: Service, tokens: list[str], n: int) -> None:
    """The click route's own cost, in this process, one request at a time (no HTTP, no contention):
    the real app and the bare one, then the real one with its parts timed."""
    import importlib
    import logging

    import anyio.to_thread

    from campaigns import metrics, signing
    from campaigns.services import clicks, tracking

    sys.path.insert(0, str(svc.home))
    bare_app = importlib.import_module("bare_app").app
    from api.app import create_app

    app = create_app()  # it configures logging as the API process does: JSON lines, here to a file
    log_file = open(svc.home / "logs" / "profile.log", "a")  # noqa: SIM115 (closed below)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(log_file)
    rng = random.Random(11)
    paths = [f"/t/{rng.choice(tokens)}" for _ in range(n)]

    async def run(a, label):
        for p in paths[:50]:  # warm-up
            await _asgi_get(a, p)
        t, cpu = time.perf_counter(), time.process_time()
        statuses = Counter([await _asgi_get(a, p) for p in paths])
        return label, (time.perf_counter() - t) / n, (time.process_time() - cpu) / n, statuses

    async def hops():
        t = time.perf_counter()
        for _ in range(n):
            await anyio.to_thread.run_sync(int)
        return (time.perf_counter() - t) / n

    hop = asyncio.run(hops())
    results = [asyncio.run(run(bare_app, "bare app")), asyncio.run(run(app, "real app"))]
    # Without the thread pool: whatever still runs in it (a campaign's links on a cache miss, the
    # fold's scheduling once per fold) runs inline, so the difference is what the thread hops cost.
    original = anyio.to_thread.run_sync

    async def inline(func, *args, **kwargs):
        return func(*args)

    timers = Timers()
    timers.wrap(signing, "verify_click", "signing.verify_click (HMAC-SHA256)")
    timers.wrap(tracking, "_read_links", "tracking._read_links (database, cache misses only)")
    timers.wrap(clicks, "record", "clicks.record (XADD + SET NX, one Redis round trip)")
    timers.wrap(clicks, "schedule_fold", "clicks.schedule_fold (Celery publish, once per fold)")
    timers.wrap(metrics, "observe_http", "metrics.observe_http (Prometheus, multiprocess files)")
    access = logging.getLogger("api.access")
    timers.wrap(access, "info", "access log line (JSON)")
    try:
        anyio.to_thread.run_sync = inline
        results.append(asyncio.run(run(app, "real app, no thread pool")))
        timers.seconds.clear()
        timers.calls.clear()
        results.append(asyncio.run(run(app, "real app, no thread pool, parts timed")))
    finally:
        anyio.to_thread.run_sync = original
        timers.restore()
        log_file.flush()
    print(f"\n  The redirect's own cost per request ({n:,} sequential requests in this process, no HTTP):")
    for label, sec, cpu, statuses in results:
        print(f"    {label:<40} {sec * 1e3:6.2f} ms wall, {cpu * 1e3:6.2f} ms CPU of this process "
              f"({1 / cpu:6,.0f} requests/s per core)  {dict(statuses)}")
    whole = results[-1][1]
    for label, sec in timers.seconds.most_common():
        print(f"      {label:<54} {sec / n * 1e3:6.2f} ms  {sec / n / whole:6.1%}")
    parts = sum(timers.seconds.values()) / n
    print(f"      {'the rest: middlewares, dependencies, session, routing':<54} {(whole - parts) * 1e3:6.2f} ms  "
          f"{(whole - parts) / whole:6.1%}")
    print(f"    one thread-pool hop (anyio.to_thread.run_sync of a no-op), same process: {hop * 1e3:.2f} ms; "
          "the click route takes none once its campaign's links are cached (it is async and outside the "
          "app-wide dependencies)")


# ------------------------------------------------------------------------------------ one backend

def run(backend: str, args) -> dict:
    print(f"\n=== {backend} — load average at start {loadavg()} (1/5/15 min), {os.cpu_count()} cores ===")
    env = {"MAB_LOG_REQUESTS": "true" if args.log_requests else "false", "MAB_API_WORKERS": str(args.api_workers)}
    svc = Service(backend, tmp=args.tmp, outbox_root=args.outbox_root, celery_concurrency=args.celery_concurrency,
                  env=env, bare=True)
    result = {"backend": backend, "load_start": os.getloadavg()}
    try:
        t = time.perf_counter()
        svc.start()
        import_customers(args.customers)
        cid = create_campaign("bench events", list(SEGMENTS))
        keys = create_keys()
        pid = start_period(cid)
        period = wait_period(pid, timeout=600)
        assert period["status"] == "completed", period
        sends = sent_ids(pid)
        from sqlalchemy import text

        from campaigns import signing
        from campaigns.db import session_scope

        with session_scope() as s:
            customer_of = dict(s.execute(text(
                "SELECT s.id, c.external_id FROM send s JOIN customer c ON c.id = s.customer_id "
                "WHERE s.period_id = :p"), {"p": pid}).all())
        assert check_click_token(svc.outbox, cid, sends[0]), "click tokens differ from the emails'"
        print(f"setup (not timed): {args.customers:,} customers, campaign {cid} (200 variants x 8 segments), "
              f"period delivered: {period['sent']:,} sent, {period['failed']} failed; "
              f"{time.perf_counter() - t:.0f} s; load {loadavg()}")
        # Let the delivery finish settling (chunk tasks acked, beat quiet) before timing.
        time.sleep(2)
        batches = make_batches(args.events, args.batch, sends, cid, customer_of, "bulk")
        base_total = ledger_total(pid)
        metrics_before = svc.metrics_text()
        print(f"\n1. Bulk events: {args.events:,} events in {len(batches)} POSTs of {args.batch:,}, "
              f"{args.clients} concurrent clients (load {loadavg()})")
        bulk = asyncio.run(bulk_phase(svc, keys["ingest"], batches, args.clients, pid, base_total + args.events,
                                      args.fold_timeout))
        metrics_after = svc.metrics_text()
        stored = scalar("SELECT COUNT(*) FROM event")
        statuses = scalar("SELECT COUNT(*) FROM event WHERE status = 'applied'")
        bs = bulk["samples"]
        folded = bulk["t_folded"]
        print(f"   accepted (202): {bulk['accepted']:,} of {args.events:,}; statuses {dict(bs.statuses)}; "
              f"stored events {stored:,} ({statuses:,} applied)")
        print(f"   all POSTs answered in {bulk['t_accept']:.2f} s: {bulk['accepted'] / bulk['t_accept']:,.0f} events/s "
              f"accepted; POST latency p50 {ms(bs.pct(50))} ms, p99 {ms(bs.pct(99))} ms")
        if folded:
            rate = args.events / folded
            print(f"   ledger includes all {args.events:,} after {folded:.2f} s: **{rate:,.0f} events/s** "
                  f"end to end (first POST -> ledger)")
        else:
            rate = None
            print(f"   ledger NOT complete after {args.fold_timeout:.0f} s: "
                  f"{bulk['ledger'] - base_total:,} of {args.events:,} folded")
        print(f"   load generator CPU {bulk['driver_cpu']:.1f} s; worker task retries {svc.retries() or 'none'}; "
              f"load {loadavg()}")
        bare = asyncio.run(bare_bulk(svc, batches, args.clients))
        bare_rate = bare["accepted"] / bare["t_accept"]
        print(f"   baseline, bare FastAPI (json.loads, 202): {bare_rate:,.0f} events/s accepted "
              f"(POST p50 {ms(bare['samples'].pct(50))} ms)")
        result.update(events=args.events, accepted=bulk["accepted"], accept_rate=bulk["accepted"] / bulk["t_accept"],
                      fold_rate=rate, bare_accept_rate=bare_rate, fold_seconds=folded)
        if rate:
            print(f"   ratios: end to end / bare accept {rate / bare_rate:.2f}; API accept / bare accept "
                  f"{result['accept_rate'] / bare_rate:.2f}")
            verdict = "MET" if rate >= TARGET_EVENTS_PER_S else "NOT MET"
            print(f"   target >= {TARGET_EVENTS_PER_S:,} events/s end to end: {verdict} "
                  f"({rate / TARGET_EVENTS_PER_S:.3f} of it)")

        if args.profile:
            prof_batches = make_batches(args.batch * 3, args.batch, sends, cid, customer_of, "prof", seed=9)
            fold_ms = profile(prof_batches, metrics_before, metrics_after, args.events)
            if backend == "postgresql":
                profile_proposal(make_batches(args.batch * 3, args.batch, sends, cid, customer_of, "prop", seed=10),
                                 fold_ms)

        events_before = scalar("SELECT COUNT(*) FROM event")
        tokens = [signing.sign_click(0, sid, cid) for sid in random.Random(5).sample(sends, min(20_000, len(sends)))]
        clicks = 0
        runs = [(args.rate, args.seconds, args.rounds, True)]
        if args.low_rate:
            runs.append((args.low_rate, args.low_seconds, 1, False))
        result["redirect"] = {}
        for rate, seconds, rounds, is_target in runs:
            print(f"\n2. Click redirect: open loop at {rate:.0f} requests/s, {seconds:.0f} s per app in "
                  f"{rounds} alternating slice(s) (load {loadavg()})")
            red = asyncio.run(redirect_phase(svc, tokens, rate, seconds, rounds))
            for name in ("bare", "real"):
                s = red[name]
                print(f"   {s.name:<22} {s.count:>6,} requests, {s.rate():6.0f}/s achieved, "
                      f"statuses {dict(s.statuses)}: p50 {ms(s.pct(50))} ms, p90 {ms(s.pct(90))} ms, "
                      f"p99 {ms(s.pct(99))} ms, max {ms(max(s.latency))} ms (scheduler lag max {ms(s.lag)} ms)")
            r, b = red["real"], red["bare"]
            print(f"   ratios real / bare: p50 {r.pct(50) / b.pct(50):.1f}x, p99 {r.pct(99) / b.pct(99):.1f}x; "
                  f"connections opened {red['connections']}; load generator CPU {red['driver_cpu']:.1f} s")
            p99 = r.pct(99) * 1000
            verdict = "MET" if p99 <= TARGET_P99_MS else "NOT MET"
            label = f"target p99 <= {TARGET_P99_MS:.0f} ms at {rate:.0f}/s" if is_target else \
                f"(not the target's rate) p99 <= {TARGET_P99_MS:.0f} ms at {rate:.0f}/s"
            print(f"   {label}: {verdict} ({p99:.1f} ms); load {loadavg()}")
            result["redirect"][rate] = {
                n: {"p50": s.pct(50), "p90": s.pct(90), "p99": s.pct(99), "max": max(s.latency), "rate": s.rate(),
                    "statuses": dict(s.statuses)} for n, s in (("bare", b), ("real", r))}
            clicks += r.statuses.get(307, 0) + red["warmup_clicks"]
        # The clicks are events too: how fast does the worker fold one-click tasks?
        t = time.perf_counter()
        deadline = t + args.drain_timeout
        while time.perf_counter() < deadline:
            got = scalar("SELECT COUNT(*) FROM event") - events_before
            if got >= clicks:
                break
            time.sleep(0.5)
        waiting, unacked, stream = svc.queue_depth()
        print(f"   click events stored: {got:,} of {clicks:,} redirects, {time.perf_counter() - t:.0f} s after the "
              f"last request (queue: {waiting} waiting, {unacked} unacked; click stream: {stream})")
        if args.profile:
            profile_redirect(svc, tokens, 1000 if not args.quick else 300)
        result["load_end"] = os.getloadavg()
        print(f"=== {backend} — load average at end {loadavg()} ===")
        return result
    finally:
        svc.stop(keep_logs=args.keep_logs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="postgresql", help="postgresql,sqlite")
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rate", type=float, default=500.0, help="redirect requests per second (open loop)")
    p.add_argument("--seconds", type=float, default=30.0, help="redirect measurement per app")
    p.add_argument("--rounds", type=int, default=3, help="alternating slices per app")
    p.add_argument("--low-rate", type=float, default=100.0,
                   help="a second, shorter redirect measurement at a rate the API can serve (0: skip)")
    p.add_argument("--low-seconds", type=float, default=10.0)
    p.add_argument("--celery-concurrency", type=int, default=2)
    p.add_argument("--api-workers", type=int, default=1, help="API processes (uvicorn --workers), the bare app too")
    p.add_argument("--log-requests", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--fold-timeout", type=float, default=240.0)
    p.add_argument("--drain-timeout", type=float, default=45.0)
    p.add_argument("--tmp", default=None, help="where the database goes (default: $TMPDIR)")
    p.add_argument("--keep-logs", default=None, help="copy the stack's logs (API, worker, redis) into this directory")
    shm = "/dev/shm"  # noqa: S108 (tmpfs on purpose; a private mkdtemp under it)
    p.add_argument("--outbox-root", default=shm if os.path.isdir(shm) else None)
    p.add_argument("--quick", action="store_true", help="20k customers, 40k events, 6 s per app")
    args = p.parse_args()
    if args.quick:
        args.customers, args.events, args.seconds, args.rounds, args.low_seconds = 20_000, 40_000, 6.0, 2, 4.0
    started = time.monotonic()
    print(f"bench_events: {args.customers:,} customers, {args.events:,} events, batch {args.batch:,}, "
          f"{args.clients} clients, redirect {args.rate:.0f}/s x {args.seconds:.0f} s; Celery concurrency "
          f"{args.celery_concurrency}; API processes {args.api_workers}; "
          f"request log {'on' if args.log_requests else 'off'}")
    backends = [b.strip() for b in args.backends.split(",")]
    if len(backends) > 1:  # one process per backend: Celery's app keeps the first broker it published to
        for backend in backends:
            argv = sys.argv[1:]
            others = [a for i, a in enumerate(argv)
                      if not a.startswith("--backends") and not (i and argv[i - 1] == "--backends")]
            subprocess.run([sys.executable, __file__, *others, f"--backends={backend}"], check=False)
    else:
        run(backends[0], args)
    print(f"\nwhole run {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
