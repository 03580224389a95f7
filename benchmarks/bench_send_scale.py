"""One send period at scale: N customers × 8 segments × 200 variants, end to end, on SQLite and
PostgreSQL, delivered by 1 and 2 worker processes. Usage:

    .venv/bin/python benchmarks/bench_send_scale.py --customers 1000000 --backends sqlite,postgresql --workers 1,2

Per backend: a fresh database (SQLite file in a temp dir; PostgreSQL started by `tests.servers`),
migrated; customers loaded directly (COPY / executemany, not measured); then one run per worker
count W (plus a W=1 run at N/4 customers, for memory flatness) and per mode (--modes). A run is a
fresh campaign (the demo campaign, burn-in 0) and a fresh period on an empty ledger:

  plan     `periods.coordinate` in its own process, as the `run_period` task runs it: allocation,
           then segment by segment assignment + ledger claim + chunks, each segment committed and
           its chunks handed out (into a queue, where the service `delay`s a task per chunk);
  deliver  W spawned processes take chunk ids from that queue and call `sending.deliver_chunk`, as
           Celery workers do with the chunk tasks.
  overlapped  (the default) the plan and the W workers start together: delivery begins with the
              first segment's chunks, as in the service;
  sequential  the plan runs alone, then the workers: the baseline without overlap.

Every figure is paired with a baseline measured in the same run, since the machine is shared:
  bare insert  the same number of ledger-shaped rows into an empty scratch table with the same
               columns and the same unique (period_id, customer_id) constraint: PostgreSQL COPY,
               SQLite executemany in one transaction (also: the same with all of `send`'s indexes);
  bare render  the same three templates (compiled the same way), rendered min(N, --render-sample)
               times in one process (the rate does not depend on N);
  sequential   with `--modes overlapped,sequential`, each period in both modes, one after the other.

The outbox (.eml files) goes to /dev/shm by default (--outbox-root): on a shared VM the disk, not
the application, would otherwise set the delivery rate. The databases stay on disk (--tmp).

CPU per customer = the plan process's, the delivery workers' (user + system) and the PostgreSQL
server's CPU (the postmaster, its live children and the ones it reaped, from /proc) over the period,
divided by N: on a machine whose cores the workers share with the database, this, not one process's
wall time, decides the rate (12M in 10 minutes on 2 cores: at most 100 µs per customer). In the
sequential mode, CPU while planning = the plan process's and the server's CPU over the plan, in
cores: what the plan alone leaves idle.

Peak RSS is each child process's own VmHWM (the plan coordinator and each delivery worker): not
`ru_maxrss`, which on Linux a spawned child inherits from its parent's peak.
Correctness is checked after each run: sent rows == eligible customers, .eml files == sent, period
completed, every chunk done once, and a few emails parsed back and matched to their customer.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import io  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from email import message_from_bytes, policy  # noqa: E402

TARGET_N = 12_000_000
CHUNK_SIZE = 10_000
SEND_COLUMNS = ("campaign_id", "period_id", "customer_id", "segment_id", "arm", "propensity", "status",
                "clicks", "conversions", "revenue")
SEND_INDEXES = [("customer_id",)]  # send's secondary index besides the unique (period_id, customer_id)


def configure(url: str, outbox: Path, home: Path) -> None:
    """Point this process (and the processes it spawns) at a database and an outbox."""
    os.environ.update(MAB_VAR_DIR=str(home), MAB_DATABASE_URL=url, MAB_OUTBOX_DIR=str(outbox),
                      MAB_REDIS_URL="redis://127.0.0.1:1/0", MAB_SEND_CHUNK_SIZE=str(CHUNK_SIZE),
                      MAB_DELIVERY_BACKEND="outbox")
    if "campaigns.settings" in sys.modules:
        from campaigns.db import reset_engine
        from campaigns.settings import get_settings

        get_settings.cache_clear()
        reset_engine()


def maxrss_mb() -> float:
    """This process's own peak RSS. On Linux `ru_maxrss` of a spawned child starts at its parent's
    peak (the hiwater of the address space it replaced at exec), so read VmHWM, which is this
    address space's own high-water mark."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Timers:
    """Cumulative time spent in wrapped functions (a cheap breakdown, two perf_counter calls each)."""

    def __init__(self):
        self.seconds = Counter()
        self.calls = Counter()

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        setattr(owner, name, timed)


def _profile_text(profiler, limit: int = 25) -> str:
    import pstats

    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(limit)
    return out.getvalue()


# ---------------------------------------------------------------- child processes (spawned)

def plan_child(period_id: int, workers: int, chunk_queue, ready, go, results, profile: bool) -> None:
    """The coordinator, as the `run_period` task runs it: `periods.coordinate`, which commits segment
    by segment and hands each segment's chunks out as they commit (here into `chunk_queue`, where a
    Celery worker would `delay` a task per chunk); then one stop mark per delivery worker."""
    try:
        from sqlmodel import Session

        import bandit
        from campaigns import db
        from campaigns.repositories import chunks as chunk_repo
        from campaigns.repositories import sends as send_repo
        from campaigns.services import periods

        timers = Timers()
        timers.wrap(periods, "_snapshots", ALLOCATION)
        timers.wrap(send_repo, "eligible_customer_ids", "select eligible customers")
        timers.wrap(bandit, "assign", "assign arms (numpy)")
        timers.wrap(send_repo, "claim_sends", CLAIM)
        for owner, name in ((send_repo, "max_send_id"), (send_repo, "claimed_since"), (chunk_repo, "create"),
                            (send_repo, "add_claimed")):
            timers.wrap(owner, name, "chunking + counts")
        timers.wrap(send_repo, "refresh_statistics", "ANALYZE send (per segment)")
        timers.wrap(Session, "commit", "commits (one per segment)")
        db.get_engine().connect().close()
        ready.put(maxrss_mb())
        go.wait()
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        handed: list[int] = []

        def enqueue(chunk_ids: list[int]) -> None:
            handed.extend(chunk_ids)
            for chunk_id in chunk_ids:
                chunk_queue.put(chunk_id)

        outcome = periods.coordinate(period_id, enqueue)
        t1 = time.perf_counter()
        cpu = time.process_time() - cpu0
        end = time.time()
        for _ in range(workers):
            chunk_queue.put(None)
        if profiler:
            profiler.disable()
        if not outcome.startswith("fanned out"):
            raise RuntimeError(f"the plan ended with {outcome!r}")
        breakdown = dict(timers.seconds)
        breakdown["other (snapshot reads, period rows, hand-out)"] = (t1 - t0) - sum(breakdown.values())
        results.put({"ok": True, "role": "plan", "seconds": t1 - t0, "end": end, "cpu": cpu, "chunk_ids": handed,
                     "rss_mb": maxrss_mb(), "breakdown": breakdown,
                     "profile": _profile_text(profiler) if profiler else ""})
    except BaseException as exc:  # report, don't hang the parent
        import traceback

        for _ in range(workers):
            chunk_queue.put(None)
        results.put({"ok": False, "error": f"{exc!r}\n{traceback.format_exc()}"})
        ready.put(None)


def deliver_child(index: int, chunk_queue, per_email_timers: bool, ready, go, results, profile: bool) -> None:
    """A delivery worker: what a Celery worker does with the chunk tasks, each as it is handed out,
    until the coordinator's stop mark. Timed per batch (reads, results, commits) and, for the render
    stage's ratio, per render; with `per_email_timers` also each email's parts (MIME, links, outbox:
    about 2 µs more per email, so those runs are a little slower)."""
    try:
        from sqlmodel import Session

        from campaigns import db, delivery, rendering
        from campaigns.repositories import sends as send_repo
        from campaigns.services import sending

        timers = Timers()
        timers.wrap(send_repo, "queued_batch", "db: read queued batch (join customer)")
        timers.wrap(rendering.CompiledCampaign, "render", "render (Jinja2, 3 templates)")
        if per_email_timers:
            timers.wrap(sending.ChunkContext, "email_for", "_email_for total")
            timers.wrap(rendering.MessageWriter, "build", "build MIME")
            timers.wrap(sending, "rewrite_links", "rewrite links + sign")
            timers.wrap(delivery.OutboxBackend, "deliver", "outbox write (.eml)")
        record, settled = sending._record, Counter()

        def counting_record(session, period_id, chunk_id, results, lease):
            settled[index] += len(results)
            return record(session, period_id, chunk_id, results, lease)

        sending._record = counting_record
        timers.wrap(sending, "_record", "db: record results (executemany UPDATE)")
        timers.wrap(Session, "commit", "db: commit")
        timers.wrap(sending.ChunkContext, "__init__", "chunk setup (compile, variants)")
        db.get_engine().connect().close()
        ready.put(maxrss_mb())
        go.wait()
        profiler = None
        if profile and index == 0:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        outcomes = Counter()
        waited = 0.0  # for the next chunk (the plan hands them out segment by segment)
        chunk_id = chunk_queue.get()
        start, t0, times0 = time.time(), time.perf_counter(), os.times()  # from the first chunk on
        while chunk_id is not None:
            outcome = sending.deliver_chunk(chunk_id)
            outcomes[outcome.split(";")[0]] += 1
            t = time.perf_counter()
            chunk_id = chunk_queue.get()
            waited += time.perf_counter() - t
        busy = time.perf_counter() - t0 - waited
        times1 = os.times()
        user, system = times1.user - times0.user, times1.system - times0.system
        end = time.time()
        if profiler:
            profiler.disable()
        breakdown = dict(timers.seconds)
        if per_email_timers:
            inner = breakdown.pop("_email_for total", 0.0)
            # email_for = render + links/signing + MIME + the SIGALRM guard and the rest
            breakdown["signing, SIGALRM guard, misc in email_for"] = inner - sum(
                breakdown.get(k, 0.0) for k in ("render (Jinja2, 3 templates)", "build MIME", "rewrite links + sign"))
            breakdown["loop, ORM rows, period/chunk progress"] = busy - inner - sum(
                v for k, v in breakdown.items() if k.startswith(("db:", "outbox", "chunk setup")))
        else:
            breakdown["the rest: outbox, MIME, signing, loop (--breakdown splits it)"] = busy - sum(breakdown.values())
        results.put({"ok": True, "role": "deliver", "index": index, "start": start, "end": end, "busy": busy,
                     "waited": waited, "cpu": user + system, "user": user, "system": system,
                     "rss_mb": maxrss_mb(), "outcomes": dict(outcomes), "breakdown": breakdown,
                     "delivered": settled[index],
                     "profile": _profile_text(profiler) if profiler else ""})
    except BaseException as exc:
        import traceback

        results.put({"ok": False, "index": index, "error": f"{exc!r}\n{traceback.format_exc()}"})
        ready.put(None)


def _collect(results, procs, count: int, timeout: float = 7200) -> list[dict]:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count:
        try:
            item = results.get(timeout=2)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"child process failed: {[(p.pid, p.exitcode) for p in dead]}") from None
            continue
        if not item.get("ok"):
            raise RuntimeError(f"child failed: {item.get('error')}")
        out.append(item)
    for p in procs:
        p.join(60)
    return out


def run_children(ctx, children: list[tuple], profile: bool) -> tuple[list[dict], float, float]:
    """Spawn one process per (target, args); time from the moment all are imported and connected
    (so the interpreter start is not measured) until the last one finishes. Returns results (in
    the order of `children`), wall, idle RSS."""
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=target, args=(*a, ready, go, results, profile), daemon=True) for target, a in children]
    for p in procs:
        p.start()
    idle = [ready.get(timeout=300) for _ in procs]
    if None in idle:
        _collect(results, procs, len(procs))  # raises with the child's traceback
    t_go = time.time()
    go.set()
    out = _collect(results, procs, len(procs))
    end = max(r.get("end", time.time()) for r in out)
    out.sort(key=lambda r: (r["role"] != "plan", r.get("index", 0)))
    return out, end - t_go, max(idle)


# ---------------------------------------------------------------- the parent: data, baselines, checks

class Backend:
    def __init__(self, name: str, home: Path):
        self.name, self.home, self.pg = name, home, None
        if name == "postgresql":
            from tests.servers import PostgresServer

            self.pg = PostgresServer(home / "pg").start()
            self.pg.execute("CREATE DATABASE bench")
            self.url = self.pg.url("bench")
            self.dsn = self.url.replace("postgresql+psycopg://", "postgresql://")
        elif name == "sqlite":
            self.url = f"sqlite:///{home / 'mab.db'}"
            self.path = home / "mab.db"
        else:
            raise SystemExit(f"unknown backend {name!r}")

    def stop(self) -> None:
        if self.pg:
            self.pg.stop()

    def cpu_seconds(self) -> float:
        """User + system CPU of the PostgreSQL server so far: the postmaster with its reaped children
        (backends of closed connections) plus its live children. 0 for SQLite (in-process)."""
        if not self.pg:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")

        def stat(pid):
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on

        postmaster = int((self.pg.datadir / "postmaster.pid").read_text().split()[0])
        fields = stat(postmaster)
        total = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    child = stat(entry.name)
                except OSError:
                    continue
                if int(child[1]) == postmaster:
                    total += int(child[11]) + int(child[12])
        return total / tick

    def connect(self):
        if self.pg:
            import psycopg

            return psycopg.connect(self.dsn)
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def sql(self, *statements: str) -> list:
        conn = self.connect()
        try:
            out = [conn.execute(s).fetchall() if s.lstrip().upper().startswith("SELECT") else conn.execute(s)
                   for s in statements]
            conn.commit()
            return out
        finally:
            conn.close()

    def load_customers(self, start: int, stop: int, segment_ids: list[int]) -> None:
        """Customers start..stop-1 (8 segments round-robin), straight into the table."""
        now = datetime.now(UTC).replace(tzinfo=None)
        attrs = '{"first_name": "Ana"}'
        conn = self.connect()
        try:
            if self.pg:
                with conn.cursor() as cur, cur.copy(
                    "COPY customer (external_id, email, segment_id, attributes, status, consent, created_at,"
                    " updated_at) FROM STDIN"
                ) as copy:
                    stamp = now.isoformat(sep=" ")
                    for a in range(start, stop, 50_000):
                        copy.write("".join(
                            f"c{i}\tc{i}@example.com\t{segment_ids[i % 8]}\t{attrs}\tactive\tt\t{stamp}\t{stamp}\n"
                            for i in range(a, min(a + 50_000, stop))))
                conn.commit()
                conn.execute("ANALYZE customer")  # what autovacuum would have done long before a send
                conn.commit()
            else:
                stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
                conn.executemany(
                    "INSERT INTO customer (external_id, email, segment_id, attributes, status, consent, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, 'active', 1, ?, ?)",
                    ((f"c{i}", f"c{i}@example.com", segment_ids[i % 8], attrs, stamp, stamp)
                     for i in range(start, stop)))
                conn.commit()
        finally:
            conn.close()

    def clear_ledger(self) -> None:
        """An empty ledger before each run, so every run (and the W=1 / W=2 pair) starts alike."""
        if self.pg:
            self.sql("TRUNCATE send, send_chunk")
        else:
            self.sql("DELETE FROM send", "DELETE FROM send_chunk")

    def bare_insert(self, n: int, segment_ids: list[int], with_indexes: bool) -> float:
        """Seconds to insert n ledger-shaped rows (same columns, same unique constraint) into an empty
        scratch table: COPY on PostgreSQL, one executemany transaction on SQLite. Row generation in
        Python is included, done as cheaply as possible."""
        conn = self.connect()
        serial = "BIGSERIAL" if self.pg else "INTEGER"
        try:
            conn.execute("DROP TABLE IF EXISTS bare_send")
            conn.execute(
                f"CREATE TABLE bare_send (id {serial} PRIMARY KEY, campaign_id INTEGER NOT NULL,"
                " period_id INTEGER NOT NULL, customer_id INTEGER NOT NULL, segment_id INTEGER NOT NULL,"
                " arm INTEGER NOT NULL, propensity FLOAT NOT NULL, status VARCHAR NOT NULL, error VARCHAR,"
                " message_id VARCHAR, sent_at TIMESTAMP, clicks INTEGER NOT NULL, first_click_at TIMESTAMP,"
                " conversions INTEGER NOT NULL, first_conversion_at TIMESTAMP, revenue FLOAT NOT NULL,"
                " UNIQUE (period_id, customer_id))")
            if with_indexes:
                for k, cols in enumerate(SEND_INDEXES):
                    conn.execute(f"CREATE INDEX ix_bare_send_{k} ON bare_send ({', '.join(cols)})")
            conn.commit()
            order = [(s, range(s + 1, n + 1, 8)) for s in range(8)]  # segment by segment, like the plan
            t = time.perf_counter()
            if self.pg:
                with conn.cursor() as cur, cur.copy(f"COPY bare_send ({', '.join(SEND_COLUMNS)}) FROM STDIN") as copy:
                    for s, ids in order:
                        sid = segment_ids[s]
                        for a in range(0, len(ids), 50_000):
                            copy.write("".join(f"1\t1\t{c}\t{sid}\t{c % 200}\t0.0045\tqueued\t0\t0\t0\n"
                                               for c in ids[a:a + 50_000]))
            else:
                conn.executemany(
                    f"INSERT INTO bare_send ({', '.join(SEND_COLUMNS)})"  # noqa: S608 (constant columns)
                    " VALUES (1, 1, ?, ?, ?, 0.0045, 'queued', 0, 0, 0)",
                    ((c, segment_ids[s], c % 200) for s, ids in order for c in ids))
            conn.commit()
            seconds = time.perf_counter() - t
            conn.execute("DROP TABLE bare_send")
            conn.commit()
            return seconds
        finally:
            conn.close()


def bare_render(n: int) -> float:
    """Seconds to render the demo campaign's three templates n times (same compiled templates)."""
    from campaigns.demo import demo_campaign
    from campaigns.design import variant_grid
    from campaigns.rendering import CompiledCampaign

    payload = demo_campaign()
    compiled = CompiledCampaign.compile(payload["name"], payload["template"])
    variants = variant_grid(payload["factors"], payload["exclusions"])
    k = len(variants)
    t = time.perf_counter()
    for i in range(n):
        compiled.render(variants[i % k], {"external_id": f"c{i}", "email": f"c{i}@example.com", "first_name": "Ana"},
                        f"https://l/t/{i}", f"https://l/u/{i}")
    return time.perf_counter() - t


def fresh_page_cost(mb: int = 256) -> tuple[float, float]:
    """µs per 4 KiB page the first time memory is touched, and to touch it again. On a VM whose host
    backs guest memory lazily and takes freed memory back (this one), the first touch is a fault in
    the host as well: every page the outbox's files take pays it (benchmarks/README.md)."""
    import numpy as np

    pages = mb * 256
    t = time.perf_counter()
    block = np.ones(mb << 20, dtype=np.uint8)
    first = time.perf_counter() - t
    t = time.perf_counter()
    block[:] = 2
    again = time.perf_counter() - t
    del block
    return first / pages * 1e6, again / pages * 1e6


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def check(backend: Backend, period_id: int, campaign_id: int, expected: int, outbox: Path) -> dict:
    from sqlalchemy import case, func, select

    from campaigns import db
    from campaigns.models import Customer, Send, SendChunk, SendPeriod

    with db.session_scope() as s:
        by_status = dict(s.execute(select(Send.status, func.count()).where(Send.period_id == period_id)
                                   .group_by(Send.status)).all())
        period = s.get(SendPeriod, period_id)
        chunks = s.execute(select(func.count(), func.sum(SendChunk.sent), func.max(SendChunk.attempts),
                                  func.sum(case((SendChunk.status == "done", 1), else_=0)))
                           .where(SendChunk.period_id == period_id)).one()
        sample_ids = s.execute(select(Send.id).where(Send.period_id == period_id, Send.status == "sent")
                               .order_by(func.random()).limit(5)).scalars().all()
        emails = dict(s.execute(select(Send.id, Customer.email).join(Customer, Customer.id == Send.customer_id)
                                .where(Send.id.in_(sample_ids))).all())
        holdout = s.execute(select(func.count()).where(Send.period_id == period_id, Send.arm == -1)).scalar_one()
    folder = outbox / f"campaign-{campaign_id}" / "period-1"
    names = Counter(e.name.rsplit(".", 1)[-1] for e in os.scandir(folder)) if folder.exists() else Counter()
    parsed_ok = 0
    for sid in sample_ids:
        msg = message_from_bytes((folder / f"{sid}.eml").read_bytes(), policy=policy.default)
        parts = [p.get_content_type() for p in msg.walk()]
        parsed_ok += msg["To"] == emails[sid] and "text/html" in parts and "text/plain" in parts \
            and msg["Message-ID"].startswith(f"<send-{sid}.")
    sent = by_status.get("sent", 0)
    result = {
        "sent": sent, "other_statuses": {k: v for k, v in by_status.items() if k != "sent"},
        "eml_files": names.get("eml", 0), "tmp_files": names.get("tmp", 0), "holdout": holdout,
        "period_status": period.status, "period_sent": period.sent, "period_total": period.total,
        "chunks": chunks[0], "chunks_done": chunks[3], "chunk_sent_sum": chunks[1], "max_attempts": chunks[2],
        "parsed_ok": f"{parsed_ok}/{len(sample_ids)}",
    }
    result["ok"] = (sent == expected and names.get("eml", 0) == sent and not names.get("tmp") and
                    not result["other_statuses"] and period.status == "completed" and period.sent == sent and
                    period.total == expected and chunks[0] == chunks[3] and chunks[1] == sent and
                    chunks[2] == 1 and parsed_ok == len(sample_ids))
    return result


def one_run(backend: Backend, ctx, n: int, workers: int, run_no: int, outbox: Path, segment_ids: list[int],
            profile: bool, render_sample: int, overlapped: bool, per_email_timers: bool) -> dict:
    """One period. `overlapped`: the coordinator and the W delivery workers start together, and the
    workers deliver each segment's chunks while the plan claims the next (as the service runs).
    Otherwise the plan runs alone, then the workers (the sequential baseline: no overlap)."""
    from campaigns import db
    from campaigns.demo import demo_campaign
    from campaigns.models import SendPeriod
    from campaigns.schemas import CampaignCreate
    from campaigns.services import campaigns

    backend.clear_ledger()
    with db.session_scope() as s:
        payload = {**demo_campaign(), "burn_in_min_sends": 0, "name": f"scale run {run_no}"}
        cid = campaigns.create(s, CampaignCreate(**payload)).id
        campaigns.transition(s, cid, "start")
        period = SendPeriod(campaign_id=cid, number=1, seed=run_no)
        s.add(period)
        s.flush()
        pid = period.id
    db.reset_engine()  # no pooled connection of the parent sits beside the children

    load = [os.getloadavg()[0]]
    chunk_queue = ctx.Queue()
    coordinator = (plan_child, (pid, workers, chunk_queue))
    deliverers = [(deliver_child, (i, chunk_queue, per_email_timers)) for i in range(workers)]
    outbox_used0 = used_bytes(outbox)
    db_cpu0 = backend.cpu_seconds()
    if overlapped:
        [planned, *delivered], period_s, idle_rss = run_children(ctx, [coordinator, *deliverers], profile)
        plan_db_cpu = None  # not separable from delivery's: the server serves both at once
        started = max(r["end"] for r in [planned, *delivered]) - period_s
        first_chunk_s = min(d["start"] for d in delivered) - started
    else:
        [planned], _, _ = run_children(ctx, [coordinator], profile)
        plan_db_cpu = backend.cpu_seconds() - db_cpu0
        delivered, deliver_wall, idle_rss = run_children(ctx, deliverers, profile)
        period_s = planned["seconds"] + deliver_wall
        first_chunk_s = planned["seconds"]  # nothing is taken before the plan ends
    db_cpu = backend.cpu_seconds() - db_cpu0
    outbox_pages = (used_bytes(outbox) - outbox_used0) // 4096
    page_first_us, page_again_us = fresh_page_cost()
    # delivery: from the first chunk a worker took to the last worker's end
    deliver_s = max(d["end"] for d in delivered) - min(d["start"] for d in delivered)
    load.append(os.getloadavg()[0])
    bare_insert_s = backend.bare_insert(n, segment_ids, with_indexes=False)
    bare_insert_idx_s = backend.bare_insert(n, segment_ids, with_indexes=True)
    sample = min(n, render_sample)
    bare_render_s = bare_render(sample) * n / sample  # seconds for n at the measured rate
    load.append(os.getloadavg()[0])
    checks = check(backend, pid, cid, n, outbox)
    t = time.perf_counter()
    shutil.rmtree(outbox / f"campaign-{cid}", ignore_errors=True)
    cleanup = time.perf_counter() - t
    breakdown = Counter()
    for d in delivered:
        breakdown.update(d["breakdown"])
    return {
        "backend": backend.name, "n": n, "workers": workers, "overlapped": overlapped,
        "chunks": len(planned["chunk_ids"]), "period_s": period_s, "first_chunk_s": first_chunk_s,
        "plan_s": planned["seconds"], "plan_rss_mb": planned["rss_mb"],
        "plan_cpu": planned["cpu"], "plan_db_cpu": plan_db_cpu, "db_cpu": db_cpu,
        "plan_breakdown": planned["breakdown"], "plan_profile": planned["profile"],
        "bare_insert_s": bare_insert_s, "bare_insert_idx_s": bare_insert_idx_s,
        "deliver_s": deliver_s, "worker_rss_mb": [d["rss_mb"] for d in delivered], "idle_rss_mb": idle_rss,
        "worker_delivered": [d["delivered"] for d in delivered], "worker_busy": [d["busy"] for d in delivered],
        "worker_waited": [d["waited"] for d in delivered],
        "worker_cpu": [d["cpu"] for d in delivered], "worker_user": [d["user"] for d in delivered],
        "worker_system": [d["system"] for d in delivered], "per_email_timers": per_email_timers,
        "outbox_pages": outbox_pages, "page_first_us": page_first_us, "page_again_us": page_again_us,
        "outcomes": [d["outcomes"] for d in delivered], "deliver_breakdown": dict(breakdown),
        "deliver_profile": "".join(d["profile"] for d in delivered),
        "bare_render_s": bare_render_s, "load": load, "checks": checks, "cleanup_s": cleanup,
    }


CLAIM = "ledger claim (COPY / executemany)"
RENDER = "render (Jinja2, 3 templates)"
ALLOCATION = "allocation (8 segments × 200 arms)"


def minutes_at_target(r: dict, n: int) -> tuple[float, float]:
    """12M extrapolated: (everything × 12M/N; the same with the allocation counted once). The
    allocation (the engine's weights for 8 segments × 200 arms) reads arm statistics, not
    customers: its cost does not grow with the audience."""
    scale = TARGET_N / n
    linear = r["period_s"] * scale
    allocation = r["plan_breakdown"].get(ALLOCATION, 0.0)
    return linear / 60, (linear - allocation * (scale - 1)) / 60


def stage_ratios(r: dict) -> tuple[float, float, float]:
    """(ledger / bare unique-only insert, ledger / bare insert with send's indexes, render / bare render)."""
    n = r["n"]
    ledger = n / r["plan_breakdown"][CLAIM]
    render = n / r["deliver_breakdown"][RENDER]  # per worker busy second (the breakdown sums over workers)
    return (ledger * r["bare_insert_s"] / n, ledger * r["bare_insert_idx_s"] / n,
            render * r["bare_render_s"] / n)


def report(r: dict) -> None:
    n, w = r["n"], r["workers"]
    plan_rate, insert_rate = n / r["plan_s"], n / r["bare_insert_s"]
    deliver_rate, render_rate = n / r["deliver_s"], n / r["bare_render_s"]
    period = r["period_s"]
    print(f"\n=== {r['backend']}: {n:,} customers, {w} worker(s), {r['chunks']} chunks of at most {CHUNK_SIZE:,}, "
          f"{'plan and delivery overlapped' if r['overlapped'] else 'plan, then delivery (sequential)'}"
          f"   (1-min load average during the run: {' → '.join(f'{x:.1f}' for x in r['load'])})")
    print(f"  plan (allocate, assign, claim, chunk): {r['plan_s']:8.2f} s {plan_rate:11,.0f} customers/s")
    print(f"    baseline bare insert (unique only):   {r['bare_insert_s']:8.2f} s {insert_rate:11,.0f} rows/s"
          f"   plan/bare = {plan_rate / insert_rate:.2f}  (target ≥ 0.50)")
    print(f"    bare insert with all send indexes:    {r['bare_insert_idx_s']:8.2f} s"
          f" {n / r['bare_insert_idx_s']:11,.0f} rows/s   plan/bare-idx = {r['bare_insert_idx_s'] / r['plan_s']:.2f}")
    for k, v in sorted(r["plan_breakdown"].items(), key=lambda kv: -kv[1]):
        print(f"      {k:52s} {v:7.2f} s  {v / r['plan_s']:5.1%}")
    if r["plan_db_cpu"] is not None:  # sequential: how much of the machine the plan alone keeps busy
        print(f"    CPU while planning: plan process {r['plan_cpu']:.2f} s + {r['backend']} server "
              f"{r['plan_db_cpu']:.2f} s = {(r['plan_cpu'] + r['plan_db_cpu']) / r['plan_s']:.2f} of "
              f"{os.cpu_count()} cores busy")
    ledger_rate = n / r["plan_breakdown"][CLAIM]
    print(f"    STAGE ledger claim: {ledger_rate:,.0f} rows/s = {ledger_rate / insert_rate:.2f} of bare (unique only),"
          f" {ledger_rate * r['bare_insert_idx_s'] / n:.2f} of bare with send's indexes  (target ≥ 0.50)")
    print(f"  first chunk taken {r['first_chunk_s']:.1f} s after the period started")
    print(f"  deliver ({w} process{'es' if w > 1 else ''}, first chunk to last):{r['deliver_s']:8.2f} s"
          f" {deliver_rate:11,.0f} customers/s ({deliver_rate / w:,.0f} per worker)")
    print(f"    baseline bare Jinja2 render:          {r['bare_render_s']:8.2f} s {render_rate:11,.0f} renders/s"
          f"   per-worker deliver/bare = {deliver_rate / w / render_rate:.2f}  (target ≥ 0.50)")
    busy = sum(r["worker_busy"])
    render_stage = n / r["deliver_breakdown"][RENDER]  # the breakdown sums the workers' time
    print(f"    STAGE render inside the workers: {render_stage:,.0f} renders per second of render time"
          f" = {render_stage / render_rate:.2f} of bare Jinja2  (target ≥ 0.50)")
    for k, v in sorted(r["deliver_breakdown"].items(), key=lambda kv: -kv[1]):
        print(f"      {k:52s} {v:7.2f} s  {v / busy:5.1%} of worker time")
    print(f"    per worker: delivered {r['worker_delivered']}, outcomes {r['outcomes']}, waited for chunks "
          f"{', '.join(f'{x:.1f}' for x in r['worker_waited'])} s")
    plan_us, worker_us, db_us = (r["plan_cpu"] / n * 1e6, sum(r["worker_cpu"]) / n * 1e6, r["db_cpu"] / n * 1e6)
    total_us = plan_us + worker_us + db_us
    print(f"  CPU per customer, the whole period: plan process {plan_us:.0f} µs + workers {worker_us:.0f} µs "
          f"(user {sum(r['worker_user']) / n * 1e6:.0f} + system {sum(r['worker_system']) / n * 1e6:.0f}) + "
          f"{r['backend']} server {db_us:.0f} µs = {total_us:.0f} µs  (12M in 10 min on "
          f"{os.cpu_count()} cores: ≤ {os.cpu_count() * 600 / TARGET_N * 1e6:.0f})")
    tax_us = r["outbox_pages"] * max(r["page_first_us"] - r["page_again_us"], 0.0) / n
    print(f"  fresh memory: the outbox took {r['outbox_pages'] * 4096 / 2**30:.1f} GiB ({r['outbox_pages'] / n:.2f} "
          f"pages per email); a fresh page costs {r['page_first_us']:.2f} µs the first time on this machine, "
          f"{r['page_again_us']:.2f} µs touched again: up to {tax_us:.0f} µs per customer of the above is that "
          f"first touch (on this VM, the host backing guest memory)")
    linear, once = minutes_at_target(r, n)
    print(f"  period end to end:                     {period:8.2f} s {n / period:11,.0f} customers/s"
          f"   → 12M at this rate: {linear:.1f} min ({once:.1f} min with the allocation counted once)")
    print(f"  peak RSS: plan process {r['plan_rss_mb']:.0f} MB; delivery workers "
          f"{', '.join(f'{x:.0f}' for x in r['worker_rss_mb'])} MB (each {r['idle_rss_mb']:.0f} MB after imports)")
    c = r["checks"]
    print(f"  correctness: {'OK' if c['ok'] else 'FAILED'} — sent {c['sent']:,} of {n:,} eligible "
          f"(holdout {c['holdout']:,}), .eml files {c['eml_files']:,}, .tmp {c['tmp_files']}, "
          f"other statuses {c['other_statuses']}, period {c['period_status']} sent={c['period_sent']:,} "
          f"total={c['period_total']:,}, chunks done {c['chunks_done']}/{c['chunks']} (max attempts "
          f"{c['max_attempts']}), emails parsed back {c['parsed_ok']}")
    if r["plan_profile"]:
        print("  --- plan profile (tottime)\n" + r["plan_profile"])
        print("  --- deliver profile, worker 0 (tottime)\n" + r["deliver_profile"])
    sys.stdout.flush()


def table(runs: list[dict]) -> str:
    head = ("| backend | customers | W | plan and delivery | plan c/s | bare insert r/s | plan/bare "
            "| ledger/bare (unique only, with indexes) | deliver c/s (per worker) | bare render/s | per-worker/bare "
            "| render stage/bare "
            "| period | 12M extrapolated (allocation once) "
            "| CPU µs/customer plan + workers + db | peak RSS plan / worker | check |")
    rows = [head, "|" + " --- |" * 4 + " ---: |" * 13]
    for r in runs:
        n, w = r["n"], r["workers"]
        period = r["period_s"]
        ledger_u, ledger_i, render = stage_ratios(r)
        rows.append(
            f"| {r['backend']} | {n:,} | {w} | {'overlapped' if r['overlapped'] else 'sequential'} "
            f"| {n / r['plan_s']:,.0f} | {n / r['bare_insert_s']:,.0f} "
            f"| {r['bare_insert_s'] / r['plan_s']:.2f} | {ledger_u:.2f}, {ledger_i:.2f} "
            f"| {n / r['deliver_s']:,.0f} ({n / r['deliver_s'] / w:,.0f}) "
            f"| {n / r['bare_render_s']:,.0f} | {r['bare_render_s'] * n / r['deliver_s'] / w / n:.2f} | {render:.2f} "
            f"| {period:,.1f} s | {minutes_at_target(r, n)[0]:.1f} min ({minutes_at_target(r, n)[1]:.1f}) "
            f"| {r['plan_cpu'] / n * 1e6:.0f} + {sum(r['worker_cpu']) / n * 1e6:.0f} + {r['db_cpu'] / n * 1e6:.0f} "
            f"| {r['plan_rss_mb']:.0f} / {max(r['worker_rss_mb']):.0f} MB "
            f"| {'OK' if r['checks']['ok'] else 'FAILED'} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--no-quarter", action="store_true", help="skip the W=1 run at N/4 (memory flatness)")
    parser.add_argument("--modes", default="overlapped",
                        help="overlapped (as the service runs: delivery starts with the first segment's chunks) "
                             "and/or sequential (the plan alone, then delivery: the baseline), comma-separated; "
                             "with both, each period is run in both modes, alternately")
    parser.add_argument("--breakdown", action="store_true",
                        help="time each email's parts too (MIME, links, outbox): the per-email table, at ~2 µs "
                             "of timer calls per email")
    parser.add_argument("--profile", action="store_true", help="cProfile the plan process and delivery worker 0")
    parser.add_argument("--tmp", default=None, help="where the databases go (default: $TMPDIR)")
    shm = "/dev/shm"  # noqa: S108 (tmpfs on purpose; a private mkdtemp under it)
    parser.add_argument("--outbox-root", default=shm if os.path.isdir(shm) else None,
                        help="where the .eml outbox goes (default /dev/shm: the shared VM disk is not measured)")
    parser.add_argument("--render-sample", type=int, default=200_000,
                        help="bare-render baseline: renders measured (min(N, this); the rate does not depend on N)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop: still run the cleanup (server, files)
    n = args.customers
    workers = [int(w) for w in args.workers.split(",")]
    modes = [m == "overlapped" for m in args.modes.split(",")]
    if set(args.modes.split(",")) - {"overlapped", "sequential"}:
        raise SystemExit("--modes: overlapped and/or sequential")
    ctx = mp.get_context("spawn")
    print(f"bench_send_scale: {n:,} customers × 8 segments × 200 variants; backends {args.backends}; "
          f"workers {workers}; outbox under {args.outbox_root or tempfile.gettempdir()}; bare-render sample "
          f"min(N, {args.render_sample:,}); {os.cpu_count()} CPUs; load average {os.getloadavg()}; "
          f"started {datetime.now().isoformat(timespec='seconds')}")
    sys.stdout.flush()
    runs = []
    for name in args.backends.split(","):
        home = Path(tempfile.mkdtemp(prefix=f"mab-scale-{name}-", dir=args.tmp))
        backend = Backend(name, home)
        try:
            outbox = Path(tempfile.mkdtemp(prefix="mab-scale-outbox-", dir=args.outbox_root))
            configure(backend.url, outbox, home)
            from campaigns.migrate import upgrade

            upgrade(backend.url)
            from campaigns.demo import SEGMENTS

            seg = dict(backend.sql("SELECT name, id FROM segment")[0])
            segment_ids = [seg[s] for s in SEGMENTS]
            plan = [(size, w, o) for size, w in ([] if args.no_quarter else [(n // 4, 1)]) + [(n, w) for w in workers]
                    for o in modes]
            loaded = 0
            for k, (size, w, overlapped) in enumerate(plan, start=1):
                if loaded < size:
                    t = time.perf_counter()
                    backend.load_customers(loaded, size, segment_ids)
                    print(f"\n[{name}] loaded customers {loaded:,}..{size:,} in {time.perf_counter() - t:.1f} s "
                          "(direct COPY/executemany; not a measured stage)")
                    loaded = size
                r = one_run(backend, ctx, size, w, k, outbox, segment_ids, args.profile, args.render_sample,
                            overlapped, args.breakdown)
                runs.append(r)
                report(r)
        finally:
            from campaigns.db import reset_engine

            reset_engine()
            backend.stop()
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(outbox, ignore_errors=True)

    print("\n## Summary (rates are customers/s; every ratio uses the baseline measured in the same run)\n")
    print(table(runs))
    print("\nMemory flatness (peak RSS of one delivery worker / of the plan process, W=1):")
    for name in args.backends.split(","):
        ones = sorted((r for r in runs if r["backend"] == name and r["workers"] == 1), key=lambda r: r["n"])
        print(f"  {name}: " + "; ".join(f"{r['n']:,} customers → worker {max(r['worker_rss_mb']):.0f} MB, "
                                      f"plan {r['plan_rss_mb']:.0f} MB" for r in ones))
    for r in runs:
        if r["backend"] == "postgresql" and r["workers"] == 2 and r["n"] == n:
            linear, once = minutes_at_target(r, n)
            mode = "overlapped" if r["overlapped"] else "sequential"
            print(f"\n12M customers with 2 workers on PostgreSQL ({mode}): {linear:.1f} min linear "
                  f"(target < 10 min: {'met' if linear < 10 else 'NOT met'}); {once:.1f} min with the allocation "
                  f"counted once ({'met' if once < 10 else 'NOT met'})")
    print(f"finished {datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
