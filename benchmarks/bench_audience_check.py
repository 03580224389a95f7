"""How long the marketer's pre-start checks take on a large audience (SQLite, a throwaway file).

Loads N customers with typed attributes and lists into the eight RFM segments, creates the demo
campaign (200 variants), then times, best of 3:

- the baseline, measured in the same run: the save-time trial render of every variant
  (`rendering.validate_templates`, what `POST /campaigns` already did);
- `GET …/audience` (reach per segment), without and with an attribute filter and a list;
- `GET …/check` (the pre-start check: a stratified sample plus one customer per attribute shape).

    nice -n 10 python benchmarks/bench_audience_check.py --customers 200000
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_of(n: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-audience-"))
    url = f"sqlite:///{home / 'bench.db'}"
    os.environ.update(MAB_DATABASE_URL=url, MAB_OUTBOX_DIR=str(home / "outbox"))

    from campaigns import db
    from campaigns.demo import demo_campaign
    from campaigns.migrate import upgrade
    from campaigns.rendering import validate_templates
    from campaigns.repositories import campaigns as campaign_repo
    from campaigns.schemas import CampaignCreate, CustomerIn
    from campaigns.services import audience, campaigns, customers
    from campaigns.settings import get_settings

    get_settings.cache_clear()
    db.reset_engine()
    upgrade(url)
    segments = demo_campaign()["segments"]
    cities = ["Lyon", "Paris", "Nice", "Lille"]
    rows = (
        (f"line {i}", CustomerIn(
            external_id=f"c{i}", email=f"c{i}@example.com", segment=segments[i % len(segments)],
            attributes={"first_name": f"N{i}", "loyalty_points": (i * 7919) % 5000, "city": cities[i % 4],
                        **({"last_visit": f"2026-{1 + i % 12:02d}-15"} if i % 3 else {})},
            lists=["spring"] if i % 5 == 0 else []))
        for i in range(args.customers))
    t0 = time.perf_counter()
    with db.session_scope() as s:
        customers.import_customers(s, rows)
    load = time.perf_counter() - t0
    with db.session_scope() as s:
        cid = campaigns.create(s, CampaignCreate(**demo_campaign())).id
        camp = campaigns.get(s, cid)
        variants = [v.params for v in campaign_repo.variants(s, cid)]
        templates = audience.templates_of(camp)
        trial, _ = best_of(3, lambda: validate_templates(templates, set(camp.factors), [camp.baseline, *variants]))
        reach, counted = best_of(3, lambda: audience.reach(s, camp))
        camp.audience = {"filter": [{"attribute": "loyalty_points", "min": 1000},
                                    {"attribute": "city", "one_of": ["Lyon", "Paris"]}], "lists": ["spring"]}
        filtered, narrowed = best_of(3, lambda: audience.reach(s, camp))
        camp.audience = None
        check, result = best_of(3, lambda: audience.check(s, camp))
        s.rollback()
    print(f"customers loaded: {args.customers:,} in {load:.1f} s (typed JSON import)")
    print(f"variants: {len(variants)}; segments: {len(segments)}")
    print(f"baseline  save-time trial render of every variant: {trial * 1000:8.1f} ms")
    print(f"reach     per segment (GET …/audience):             {reach * 1000:8.1f} ms  "
          f"({counted['total']:,} customers; {reach / trial:.1f}x the baseline)")
    print(f"reach     with a filter and a list:                 {filtered * 1000:8.1f} ms  "
          f"({narrowed['total']:,} customers; {filtered / trial:.1f}x)")
    print(f"check     pre-start check (GET …/check):            {check * 1000:8.1f} ms  "
          f"({result['sampled']} customers sampled, ok={result['ok']}; {check / trial:.1f}x)")


if __name__ == "__main__":
    main()
