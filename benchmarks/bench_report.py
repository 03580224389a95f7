"""Time of the lift report on a large ledger in PostgreSQL, beside a bare COUNT(*) of the same rows
and a plain GET /campaigns/{id} through the API.

Builds a throwaway PostgreSQL cluster (initdb, as the `postgres` user when run as root), migrates
it, creates the demo campaign (4 x 5 x 10 = 200 variants, 8 segments, 10% holdout), an allocation
snapshot per period and segment, and N delivered sends spread over P periods with a bulk
INSERT ... SELECT generate_series (clicks ~4%, conversions ~1.2% with revenue, ~1% failed), plus one
event per click and conversion. Then, each best of 3 in the same run:

  baseline   SELECT count(*) FROM send WHERE period_id IN (the campaign's periods)
  ledger     the report's ledger aggregate (GROUP BY period, segment, arm, propensity, status)
  report     reports.lift_report end to end (every query, the posteriors, off-policy, health),
             first read (posteriors computed) and again on the same totals (posteriors reused)
  csv, html  the two other formats from the report
  HTTP       through the app (in-process client, an analyst key): GET /campaigns/{id} (the baseline
             of a request); the report's first read (nothing stored: computed and stored); reads of
             the stored report (JSON, CSV, HTML); a read right after new feedback (served as stored,
             marked behind); and ?fresh=true (computed on the read)

Usage (the demo campaign's size: 4 periods of 16,000; and the 12-million case):

    nice -n 10 .venv/bin/python benchmarks/bench_report.py --sends 64000 --periods 4 --html /tmp/r.html
    nice -n 10 .venv/bin/python benchmarks/bench_report.py --sends 12000000 --periods 4
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_of(n: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=1_000_000)
    parser.add_argument("--periods", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="also print where lift_report spends its time")
    parser.add_argument("--html", type=Path, help="also write the HTML report to this file")
    parser.add_argument("--no-http", action="store_true", help="skip the timings through the API")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mab-bench-report-"))

    from tests.servers import PostgresServer, RedisServer

    pg = PostgresServer(home / "pg").start()
    broker = RedisServer(home / "redis").start()  # a read of a report behind asks the workers through it
    os.environ["MAB_REDIS_URL"] = broker.url
    try:
        run(pg, args.sends, args.periods, home, args.profile, args.html, not args.no_http)
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)


def run(pg, n_sends: int, n_periods: int, home: Path, profile: bool = False, html_out: Path | None = None,
        with_http: bool = True) -> None:
    import numpy as np
    import psycopg

    pg.execute("CREATE DATABASE bench")
    url = pg.url("bench")
    os.environ.update(MAB_DATABASE_URL=url, MAB_OUTBOX_DIR=str(home / "outbox"))
    from campaigns import db
    from campaigns.demo import demo_campaign
    from campaigns.migrate import upgrade
    from campaigns.models import AllocationSnapshot, SendPeriod, utcnow
    from campaigns.repositories import campaigns as campaign_repo
    from campaigns.repositories import reports as report_repo
    from campaigns.schemas import CampaignCreate
    from campaigns.services import campaigns, reports
    from campaigns.settings import get_settings

    get_settings.cache_clear()
    db.reset_engine()
    upgrade(url)
    t0 = time.perf_counter()
    with db.session_scope() as s:
        cid = campaigns.create(s, CampaignCreate(**{**demo_campaign(), "burn_in_min_sends": 0})).id
        campaigns.transition(s, cid, "start")
        segments = [seg.id for seg in campaign_repo.campaign_segments(s, cid)]
        n_arms = campaign_repo.variant_count(s, cid)
        rng = np.random.default_rng(1)
        period_ids = []
        for number in range(1, n_periods + 1):
            period = SendPeriod(campaign_id=cid, number=number, seed=number, status="completed",
                                started_at=utcnow(), completed_at=utcnow())
            s.add(period)
            s.flush()
            period_ids.append(period.id)
            for seg in segments:
                w = rng.dirichlet(np.full(n_arms, 0.3))
                s.add(AllocationSnapshot(campaign_id=cid, period_id=period.id, segment_id=seg, version=number,
                                         seed=number, stage="thompson", holdout_share=0.1, arms=list(range(n_arms)),
                                         weights=w.tolist(), p_best=w.tolist(),
                                         counts={"sends": [0] * n_arms}, diagnostics={}))
    per_period = n_sends // n_periods
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for j, pid in enumerate(period_ids):
            # arm -1 (holdout) with probability 0.1, else one of the arms uniformly; propensity logged.
            conn.execute(f"""
                INSERT INTO send (campaign_id, period_id, customer_id, segment_id, arm, propensity, status,
                                  error, sent_at, clicks, first_click_at, conversions, first_conversion_at,
                                  revenue)
                SELECT {cid}, {pid}, g, {segments[0]} + g % {len(segments)}, a.arm,
                       CASE WHEN a.arm = -1 THEN 0.1 ELSE 0.9 / {n_arms} END,
                       CASE WHEN r.u > 0.99 THEN 'failed' ELSE 'sent' END,
                       CASE WHEN r.u > 0.995 THEN '550 5.1.1 no such user'
                            WHEN r.u > 0.99 THEN 'suppressed: customer is unsubscribed' END,
                       now() - interval '{n_periods - j} days',
                       (r.u < 0.04)::int, CASE WHEN r.u < 0.04 THEN now() END,
                       (r.u < 0.012)::int, CASE WHEN r.u < 0.012 THEN now() END,
                       CASE WHEN r.u < 0.012 THEN round((20 + 2000 * r.u)::numeric, 2) ELSE 0 END
                FROM generate_series(1, {per_period}) AS g,
                     LATERAL (SELECT CASE WHEN random() < 0.1 THEN -1
                                          ELSE floor(random() * {n_arms})::int END + 0 * g AS arm) AS a,
                     LATERAL (SELECT random() + 0 * g AS u) AS r""")  # noqa: S608 (this script's integers)
        conn.execute("""
            INSERT INTO event (event_id, type, status, campaign_id, send_id, revenue, occurred_at, received_at)
            SELECT 'k' || id, 'click', 'applied', campaign_id, id, 0, first_click_at, first_click_at
            FROM send WHERE first_click_at IS NOT NULL
            UNION ALL
            SELECT 'v' || id, 'conversion', 'applied', campaign_id, id, revenue, first_conversion_at,
                   first_conversion_at + interval '1 hour'
            FROM send WHERE first_conversion_at IS NOT NULL""")
        conn.execute("VACUUM ANALYZE")
        sends = conn.execute("SELECT count(*) FROM send").fetchone()[0]
        n_events = conn.execute("SELECT count(*) FROM event").fetchone()[0]
    build = time.perf_counter() - t0
    ids = ",".join(map(str, period_ids))

    with db.session_scope() as s:
        from sqlalchemy import text

        baseline, count = best_of(3, lambda: s.execute(
            text(f"SELECT count(*) FROM send WHERE period_id IN ({ids})")).scalar_one())  # noqa: S608
        ledger, groups = best_of(3, lambda: report_repo.ledger_groups(s, period_ids))
        late, _ = best_of(3, lambda: report_repo.late_events(s, cid, period_ids, 7))
        def cold():
            reports._POSTERIOR_CACHE.clear()  # noqa: SLF001 (a first read after new feedback)
            return reports.lift_report(s, cid)

        total, rep = best_of(3, cold)
        warm, _ = best_of(3, lambda: reports.lift_report(s, cid))
    csv_t, rows = best_of(3, lambda: list(reports.csv_rows(rep)))
    html_t, html = best_of(3, lambda: reports.render_html(rep))
    assert count == sends
    if html_out is not None:
        html_out.write_text(html, encoding="utf-8")
    http = _http_times(cid) if with_http else {}

    print(f"PostgreSQL, {sends:,} sends in {n_periods} periods x 8 segments x {n_arms} variants, "
          f"{n_events:,} events (built in {build:.0f} s)")
    print(f"  baseline COUNT(*) of the ledger rows   {baseline:7.3f} s")
    print(f"  report ledger GROUP BY                 {ledger:7.3f} s  ({ledger / baseline:.1f}x the COUNT; "
          f"{len(groups):,} rows back)")
    print(f"  late-data join (events x sends)        {late:7.3f} s")
    print(f"  lift_report end to end                 {total:7.3f} s  ({total / baseline:.1f}x the COUNT)")
    print(f"  of which outside those two queries     {total - ledger - late:7.3f} s "
          f"(posteriors for 3 metrics, off-policy, health)")
    print(f"  lift_report again, same totals         {warm:7.3f} s  (posteriors reused; {warm / baseline:.1f}x "
          "the COUNT)")
    print(f"  CSV rows ({len(rows):,})                     {csv_t:7.3f} s")
    print(f"  HTML page ({len(html) / 1e6:.1f} MB)                  {html_t:7.3f} s")
    if profile:
        import cProfile
        import pstats

        with db.session_scope() as s:
            prof = cProfile.Profile()
            prof.runcall(reports.lift_report, s, cid)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    print(f"  12M-send extrapolation (SQL linear, rest constant): "
          f"{(ledger + late) * 12e6 / sends + (total - ledger - late):.1f} s")
    if not http:
        return
    base = http["/campaigns/{id}"]
    print("Through the API (in-process client; reads of the stored report best of 3):")
    for path, t in http.items():
        ratio = "" if path == "/campaigns/{id}" else f"  ({t / base:.1f}x the plain GET)"
        print(f"  GET {path:<58} {t:7.3f} s{ratio}")


def _http_times(cid: int) -> dict[str, float]:
    """Through the app as an analyst reads it: the plain GET as the baseline, then the report's first
    read (nothing stored: computed), reads of the stored report (current), a read right after new
    feedback (served as stored, marked behind), and ?fresh=true (computed on the read)."""
    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from api.app import app
    from campaigns import db
    from campaigns.services import keys, reports

    with db.session_scope() as s:
        _, secret = keys.create_key(s, "bench-analyst", "analyst")
        s.execute(text("DELETE FROM report_snapshot"))
    reports._POSTERIOR_CACHE.clear()  # noqa: SLF001 (a first read: nothing computed in this process)
    out = {}
    with TestClient(app) as client:
        def get(path: str, state: str | None = None) -> float:
            t = time.perf_counter()
            r = client.get(path.replace("{id}", str(cid)), headers={"X-API-Key": secret})
            took = time.perf_counter() - t
            assert r.status_code == 200, r.text[:500]
            assert state is None or r.headers["X-Report-Freshness"] == state, r.headers
            return took

        def best(path: str, state: str | None = None) -> float:
            return min(get(path, state) for _ in range(3))

        out["/campaigns/{id}"] = best("/campaigns/{id}")
        out["/campaigns/{id}/report (nothing stored: computed)"] = get("/campaigns/{id}/report", "current")
        out["/campaigns/{id}/report (stored, current)"] = best("/campaigns/{id}/report", "current")
        out["/campaigns/{id}/report.csv (stored)"] = best("/campaigns/{id}/report.csv", "current")
        out["/campaigns/{id}/report.html (stored)"] = best("/campaigns/{id}/report.html", "current")
        with db.session_scope() as s:  # new feedback: one more applied conversion
            s.execute(text("INSERT INTO event (event_id, type, status, campaign_id, send_id, revenue, occurred_at, "
                           "received_at) SELECT 'bench-new', 'conversion', 'applied', :c, min(id), 10, now(), now() "
                           "FROM send WHERE campaign_id = :c"), {"c": cid})
        out["/campaigns/{id}/report (after new feedback: behind)"] = get("/campaigns/{id}/report", "behind")
        reports._POSTERIOR_CACHE.clear()  # noqa: SLF001
        out["/campaigns/{id}/report?fresh=true (computed)"] = get("/campaigns/{id}/report?fresh=true", "current")
    return out


if __name__ == "__main__":
    main()
