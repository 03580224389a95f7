"""Under load, nothing lost (issue 5): mixed traffic on loopback for several minutes while a send
period runs, then count everything. Usage:

    nice -n 10 .venv/bin/python benchmarks/load_test.py              # 3 minutes of load
    nice -n 10 .venv/bin/python benchmarks/load_test.py --quick      # 30 s, a smaller audience
    nice -n 10 .venv/bin/python benchmarks/load_test.py --seconds 600 --click-rate 60

The real stack as `mab up` starts it (campaigns/stack.py: redis-server, a Celery worker with
--celery-concurrency processes and beat, one uvicorn process serving api.app) on a throwaway
PostgreSQL (tests/servers.py) or SQLite file. Rate limits are off (MAB_RATE_LIMIT_*=0: the load
would otherwise be refused with 429); the request log is on.

Setup, through the service functions, not timed: --customers customers over the 8 segments;
campaign A on two segments (a quarter of them) with one delivered period, whose sends the clicks and
events are about and whose report is read; campaign B on all 8 segments, started, no period yet.

Load (an asyncio load generator in this process, HTTP/1.1 keep-alive, no dependency):
  period    at t = 0, POST /campaigns/{B}/periods (marketer): the period of every customer runs
            through the Celery worker during the load; GET …/periods/{n} every --status-interval s
  clicks    GET /t/{token} of A's delivered sends, a browser's user agent, open loop at --click-rate/s
  events    POST /events of --batch unique events (3 clicks : 1 conversion, on A's sends), open loop,
            one every --event-interval s
  reports   GET /campaigns/{A}/report (analyst), --report-clients closed-loop readers
Latency of open-loop requests counts from the moment they were due (no coordinated omission).

At the end, after the queue drains (bounded by --drain-timeout): every status code per request type
(zero 5xx, zero connection errors); every accepted event accounted for — the sum of the 202 answers'
`accepted` plus the 307 redirects (each click is an event) equals the new rows of the event table,
and each kind matches by id prefix; the period completed with every eligible customer sent exactly
once (ledger rows = eligible customers, one per customer, all `sent`, one .eml each).
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time
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
    ms,
    open_loop,
    overlapping,
    scalar,
    sent_ids,
    start_period,
    timed,
    wait_period,
)

A_SEGMENTS = SEGMENTS[:2]


def event_bodies(n_bodies: int, batch: int, sends: list[int], campaign_id: int, customer_of: dict[int, str],
                 run: str) -> list[bytes]:
    """Prebuilt JSON bodies (the generator must not spend its loop on json.dumps during the load)."""
    rng = random.Random(2)
    out = []
    for b in range(n_bodies):
        events = []
        for j in range(batch):
            i = b * batch + j
            sid = rng.choice(sends)
            eid = f"lt-{run}-{i}"
            if i % 4 != 3:
                events.append({"event_id": eid, "type": "click", "send_id": sid})
            elif i % 40 == 39:  # a tenth of the conversions by customer + campaign: attribution runs
                events.append({"event_id": eid, "type": "conversion", "campaign_id": campaign_id,
                               "customer_external_id": customer_of[sid], "revenue": round(rng.uniform(5, 80), 2)})
            else:
                events.append({"event_id": eid, "type": "conversion", "send_id": sid,
                               "revenue": round(rng.uniform(5, 80), 2)})
        out.append(json.dumps({"events": events}).encode())
    return out


class Load:
    def __init__(self, svc: Service, keys: dict, args, campaign_a: int, campaign_b: int, tokens: list[str],
                 bodies: list[bytes]):
        self.svc, self.args, self.a, self.b = svc, args, campaign_a, campaign_b
        self.tokens, self.bodies = tokens, bodies
        port = svc.port
        self.browser = RawHTTP(port, headers={"User-Agent": BROWSER})
        self.ingest = RawHTTP(port, headers={"X-API-Key": keys["ingest"], "Content-Type": "application/json"})
        self.analyst = RawHTTP(port, headers={"X-API-Key": keys["analyst"]})
        self.marketer = RawHTTP(port, headers={"X-API-Key": keys["marketer"]})
        self.samples = {k: Samples(k) for k in ("GET /t/{token}", "POST /events", "GET /campaigns/{id}/report",
                                                "POST /campaigns/{id}/periods", "GET /campaigns/{id}/periods/{n}")}
        self.accepted = 0
        self.period_numbers: list[int] = []
        self.period_started: dict[int, float] = {}
        self.period_took: dict[int, float] = {}  # seconds from the POST to the first poll that saw it completed
        self.progress: list[tuple[float, dict]] = []
        self.stop = asyncio.Event()

    async def start_period(self):
        s = self.samples["POST /campaigns/{id}/periods"]
        loop = asyncio.get_running_loop()
        s.started = s.started or loop.time()
        status, body = await timed(self.marketer, self.marketer.build("POST", f"/campaigns/{self.b}/periods"), s,
                                   loop.time())
        s.ended = loop.time()
        if status != 202:
            raise RuntimeError(f"starting the period failed: {status} {body[:300]!r}")
        number = json.loads(body)["number"]
        self.period_numbers.append(number)
        self.period_started[number] = loop.time()

    async def clicks(self, seconds: float):
        s = self.samples["GET /t/{token}"]
        rng = random.Random(4)

        async def fire(i, due):
            await timed(self.browser, self.browser.build("GET", f"/t/{rng.choice(self.tokens)}"), s, due, timeout=60)

        await open_loop(self.args.click_rate, seconds, fire, s, self.stop)

    async def events(self, seconds: float):
        s = self.samples["POST /events"]

        async def fire(i, due):
            status, body = await timed(self.ingest, self.ingest.build("POST", "/events", self.bodies[i]), s, due,
                                       timeout=120)
            if status == 202:
                self.accepted += json.loads(body)["accepted"]

        await open_loop(1 / self.args.event_interval, seconds, fire, s, self.stop)

    async def reports(self, deadline: float):
        s = self.samples["GET /campaigns/{id}/report"]
        loop = asyncio.get_running_loop()
        s.started = loop.time()
        raw = self.analyst.build("GET", f"/campaigns/{self.a}/report")
        while loop.time() < deadline and not self.stop.is_set():
            status, _ = await timed(self.analyst, raw, s, loop.time(), timeout=120)
            await asyncio.sleep(self.args.report_pause)
        s.ended = loop.time()

    async def status(self, deadline: float, t0: float):
        s = self.samples["GET /campaigns/{id}/periods/{n}"]
        loop = asyncio.get_running_loop()
        s.started = loop.time()
        next_print = t0 + 30
        while loop.time() < deadline and not self.stop.is_set():
            number = self.period_numbers[-1]
            raw = self.marketer.build("GET", f"/campaigns/{self.b}/periods/{number}")
            status, body = await timed(self.marketer, raw, s, loop.time(), timeout=60)
            if status == 200:
                p = json.loads(body)
                self.progress.append((loop.time() - t0, p))
                if p["status"] == "completed" and number not in self.period_took:
                    self.period_took[number] = loop.time() - self.period_started[number]
                    # Back to back, so that a period runs during the whole load: the next one starts
                    # when there is time left for it to finish (as long as the first one took).
                    first = self.period_took[self.period_numbers[0]]
                    if self.args.back_to_back and deadline - loop.time() > first:
                        await self.start_period()
                        continue
            if loop.time() >= next_print:
                next_print += 30
                self.print_progress(loop.time() - t0)
            await asyncio.sleep(self.args.status_interval)
        s.ended = loop.time()

    def print_progress(self, elapsed: float):
        last = self.progress[-1][1] if self.progress else {}
        number = last.get("number", "?")
        n = {k: v.count for k, v in self.samples.items()}
        counts = (f"clicks {n['GET /t/{token}']:,}, event posts {n['POST /events']}, "
                  f"reports {n['GET /campaigns/{id}/report']}")

        print(f"   t={elapsed:5.0f} s  {counts}; period {number} {last.get('status')} {last.get('sent', 0):,}/"
              f"{last.get('total', 0):,}; load {loadavg()}", flush=True)

    async def run(self, seconds: float) -> float:
        loop = asyncio.get_running_loop()
        await self.browser.warm(8)
        t0 = loop.time()
        await self.start_period()
        deadline = t0 + seconds
        tasks = [self.clicks(seconds), self.events(seconds), self.status(deadline, t0)]
        tasks += [self.reports(deadline) for _ in range(self.args.report_clients)]
        await asyncio.gather(*tasks)
        for c in (self.browser, self.ingest, self.analyst, self.marketer):
            c.close()
        return loop.time() - t0


def wait_drained(svc: Service, expected_events: int, events_before: int, period_ids: list[int],
                 timeout: float) -> dict:
    """After the load: until every period is done and every accepted event is stored (or the timeout)."""
    t = time.monotonic()
    out = {"period_done_after": None, "events_done_after": None}
    while time.monotonic() - t < timeout:
        statuses = {scalar("SELECT status FROM send_period WHERE id = :p", p=pid) for pid in period_ids}
        if out["period_done_after"] is None and statuses <= {"completed", "failed"}:
            out["period_done_after"] = time.monotonic() - t
        stored = scalar("SELECT COUNT(*) FROM event") - events_before
        if out["events_done_after"] is None and stored >= expected_events:
            out["events_done_after"] = time.monotonic() - t
        if out["period_done_after"] is not None and out["events_done_after"] is not None:
            break
        time.sleep(1)
    waiting, unacked, _ = svc.queue_depth()
    # still settle a moment, so a late duplicate or an extra row would show up in the count
    time.sleep(2)
    out.update(waiting=waiting, unacked=unacked, waited=time.monotonic() - t)
    return out


def check_period(svc: Service, campaign_id: int, period_id: int, eligible: int) -> dict:
    rows = scalar("SELECT COUNT(*) FROM send WHERE period_id = :p", p=period_id)
    distinct = scalar("SELECT COUNT(DISTINCT customer_id) FROM send WHERE period_id = :p", p=period_id)
    sent = scalar("SELECT COUNT(*) FROM send WHERE period_id = :p AND status = 'sent'", p=period_id)
    missing = scalar(
        "SELECT COUNT(*) FROM customer c JOIN campaign_segment cs ON cs.segment_id = c.segment_id "
        "WHERE cs.campaign_id = :c AND c.status = 'active' AND c.consent "
        "AND NOT EXISTS (SELECT 1 FROM send s WHERE s.period_id = :p AND s.customer_id = c.id)",
        c=campaign_id, p=period_id)
    period = wait_period(period_id, timeout=0)
    number = scalar("SELECT number FROM send_period WHERE id = :p", p=period_id)
    folder = svc.outbox / f"campaign-{campaign_id}" / f"period-{number}"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    eml = sum(n.endswith(".eml") for n in names)
    tmp = sum(n.endswith(".tmp") for n in names)
    ok = (period["status"] == "completed" and rows == distinct == sent == eligible == period["total"]
          == period["sent"] and period["failed"] == 0 and missing == 0 and eml == sent and tmp == 0)
    return {"ok": ok, "status": period["status"], "total": period["total"], "period_sent": period["sent"],
            "failed": period["failed"], "rows": rows, "distinct_customers": distinct, "rows_sent": sent,
            "eligible": eligible, "eligible_without_send": missing, "eml": eml, "tmp": tmp}


def report(load: Load, duration: float) -> tuple[int, int]:
    print(f"\n   {'request':<34} {'count':>7} {'per s':>7} {'p50 ms':>8} {'p99 ms':>9} {'max ms':>9}  status codes")
    server_errors = failures = 0
    for name, s in load.samples.items():
        per_s = s.count / duration
        mx = max(s.latency) if s.latency else float("nan")
        print(f"   {name:<34} {s.count:>7,} {per_s:>7.1f} {ms(s.pct(50)):>8} {ms(s.pct(99)):>9} {ms(mx):>9}  "
              f"{dict(sorted(s.statuses.items(), key=str))}")
        server_errors += s.errors_5xx()
        failures += s.failures()
    lag = max(s.lag for s in load.samples.values())
    print(f"   (open-loop scheduler lag max {ms(lag)} ms)")
    # One uvicorn process serves everything: a report (numpy, ~seconds of CPU) or a 5,000-event
    # validation holds the interpreter while clicks wait. Split the clicks by what was in flight.
    clicks = load.samples["GET /t/{token}"]
    in_report = overlapping(load.samples["GET /campaigns/{id}/report"].intervals())
    in_post = overlapping(load.samples["POST /events"].intervals())
    print("   clicks by what else the API was serving meanwhile:")
    for label, keep in [("a report in flight", in_report),
                        ("an events POST in flight, no report", lambda a, b: in_post(a, b) and not in_report(a, b)),
                        ("neither", lambda a, b: not in_post(a, b) and not in_report(a, b))]:
        part = clicks.subset(keep)
        print(f"     {label:<38} {len(part.latency):>6,} clicks  p50 {ms(part.pct(50)):>7} ms  "
              f"p99 {ms(part.pct(99)):>8} ms")
    return server_errors, failures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="postgresql", choices=["postgresql", "sqlite"])
    p.add_argument("--seconds", type=float, default=180.0, help="length of the load (default 3 minutes)")
    p.add_argument("--quick", action="store_true", help="30 s of load on 40,000 customers")
    p.add_argument("--customers", type=int, default=200_000, help="campaign B's period: every one of them")
    p.add_argument("--click-rate", type=float, default=40.0, help="GET /t/{token} per second (open loop)")
    p.add_argument("--event-interval", type=float, default=4.0, help="seconds between POST /events (open loop)")
    p.add_argument("--batch", type=int, default=5_000, help="events per POST /events")
    p.add_argument("--report-clients", type=int, default=1)
    p.add_argument("--report-pause", type=float, default=1.0, help="seconds between a reader's reports")
    p.add_argument("--status-interval", type=float, default=5.0)
    p.add_argument("--back-to-back", action=argparse.BooleanOptionalAction, default=True,
                   help="start the next period of B when one completes, while there is time left for it")
    p.add_argument("--drain-timeout", type=float, default=150.0)
    p.add_argument("--celery-concurrency", type=int, default=2)
    p.add_argument("--tmp", default=None, help="where the database goes (default: $TMPDIR)")
    p.add_argument("--keep-logs", default=None, help="copy the stack's logs (API, worker, redis) into this directory")
    shm = "/dev/shm"  # noqa: S108 (tmpfs on purpose; a private mkdtemp under it)
    p.add_argument("--outbox-root", default=shm if os.path.isdir(shm) else None)
    args = p.parse_args()
    if args.quick:
        args.seconds, args.customers = 30.0, 40_000
    started = time.monotonic()
    load_start = loadavg()
    print(f"load_test: {args.seconds:.0f} s of load on {args.backend}; period of {args.customers:,} customers; "
          f"clicks {args.click_rate:g}/s, one POST of {args.batch:,} events every {args.event_interval:g} s, "
          f"{args.report_clients} report reader(s); Celery concurrency {args.celery_concurrency}")
    print(f"load average at start {load_start} (1/5/15 min), {os.cpu_count()} cores")
    svc = Service(args.backend, tmp=args.tmp, outbox_root=args.outbox_root, celery_concurrency=args.celery_concurrency)
    ok = False
    try:
        svc.start()
        import_customers(args.customers)
        a = create_campaign("load A (clicks, events, report)", list(A_SEGMENTS))
        b = create_campaign("load B (the period under load)", list(SEGMENTS))
        keys = create_keys()
        pa = start_period(a)
        period_a = wait_period(pa, timeout=600)
        assert period_a["status"] == "completed", period_a
        sends = sent_ids(pa)
        assert check_click_token(svc.outbox, a, sends[0]), "click tokens differ from the emails'"
        from sqlalchemy import text

        from campaigns import signing
        from campaigns.db import session_scope

        with session_scope() as s:
            customer_of = dict(s.execute(text(
                "SELECT s.id, c.external_id FROM send s JOIN customer c ON c.id = s.customer_id "
                "WHERE s.period_id = :p"), {"p": pa}).all())
        tokens = [signing.sign_click(0, sid, a) for sid in random.Random(6).sample(sends, min(20_000, len(sends)))]
        n_bodies = int(args.seconds / args.event_interval) + 1
        bodies = event_bodies(n_bodies, args.batch, sends, a, customer_of, run=str(os.getpid()))
        eligible = scalar(
            "SELECT COUNT(*) FROM customer c JOIN campaign_segment cs ON cs.segment_id = c.segment_id "
            "WHERE cs.campaign_id = :c AND c.status = 'active' AND c.consent", c=b)
        events_before = scalar("SELECT COUNT(*) FROM event")
        print(f"setup (not timed, {time.monotonic() - started:.0f} s): {args.customers:,} customers; campaign A "
              f"({', '.join(A_SEGMENTS)}): {period_a['sent']:,} sends delivered; campaign B: {eligible:,} eligible; "
              f"load {loadavg()}")

        print(f"\nload for {args.seconds:.0f} s (load average {loadavg()})", flush=True)
        load = Load(svc, keys, args, a, b, tokens, bodies)
        cpu0 = time.process_time()
        duration = asyncio.run(load.run(args.seconds))
        cpu = time.process_time() - cpu0
        period_ids = [scalar("SELECT id FROM send_period WHERE campaign_id = :c AND number = :n", c=b, n=n)
                      for n in load.period_numbers]
        at_end = load.progress[-1] if load.progress else (None, {})
        print(f"load over after {duration:.0f} s (load average {loadavg()}); load generator CPU {cpu:.1f} s; "
              f"periods started {load.period_numbers}, completed during the load after "
              f"{', '.join(f'{t:.0f} s' for t in load.period_took.values()) or '-'}; at the last poll "
              f"(t={at_end[0] or 0:.0f} s) period {at_end[1].get('number')} {at_end[1].get('status')} "
              f"{at_end[1].get('sent', 0):,}/{at_end[1].get('total', 0):,}")
        server_errors, failures = report(load, duration)

        clicks = load.samples["GET /t/{token}"].statuses.get(307, 0)
        expected = load.accepted + clicks
        drained = wait_drained(svc, expected, events_before, period_ids, args.drain_timeout)
        stored = scalar("SELECT COUNT(*) FROM event") - events_before
        bulk_rows = scalar("SELECT COUNT(*) FROM event WHERE event_id LIKE :p", p=f"lt-{os.getpid()}-%")
        click_rows = scalar("SELECT COUNT(*) FROM event WHERE event_id LIKE 'click-%'")
        with session_scope() as s:
            by_status = dict(s.execute(text("SELECT status, COUNT(*) FROM event GROUP BY status")).all())
            excluded = dict(s.execute(text(
                "SELECT reason, COUNT(*) FROM event WHERE status = 'excluded' GROUP BY reason")).all())
        periods = [check_period(svc, b, pid, eligible) for pid in period_ids]
        print(f"\n   after the load: the last period done {_after(drained['period_done_after'])}, events stored "
              f"{_after(drained['events_done_after'])} (queue: {drained['waiting']} waiting, "
              f"{drained['unacked']} unacked)")
        events_ok = stored == expected and bulk_rows == load.accepted and click_rows == clicks
        print(f"   events: accepted {load.accepted:,} (202) + {clicks:,} clicks (307) = {expected:,}; new rows "
              f"{stored:,} (bulk {bulk_rows:,}, clicks {click_rows:,}); statuses {by_status}, excluded {excluded}: "
              f"{'OK' if events_ok else 'MISMATCH'}")
        for number, period in zip(load.period_numbers, periods, strict=True):
            print(f"   period {number}: {period}: {'OK' if period['ok'] else 'FAILED'}")
        print(f"   worker task retries (from its log): {svc.retries() or 'none'}")
        print(f"   5xx: {server_errors}, connection errors/timeouts: {failures}: "
              f"{'OK' if not server_errors and not failures else 'FAILED'}")
        ok = events_ok and all(p["ok"] for p in periods) and not server_errors and not failures
        print(f"\nverdict: {'PASS' if ok else 'FAIL'} — load average at start {load_start}, at end {loadavg()}; "
              f"whole run {time.monotonic() - started:.0f} s")
    finally:
        svc.stop(keep_logs=args.keep_logs)
    sys.exit(0 if ok else 1)


def _after(seconds: float | None) -> str:
    return "NOT within the drain timeout" if seconds is None else f"{seconds:.0f} s after it"


if __name__ == "__main__":
    main()
