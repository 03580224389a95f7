"""A profit campaign on real parts (uvicorn, a Celery worker and beat, redis-server, SQLite or
PostgreSQL): defined over HTTP with its economics, sent, fed back (orders and a one-click
unsubscribe), reweighted by the workers with the profit objective, and reported with its profit lift."""

import csv
import email
import email.policy
import io
import re

import httpx
import pytest

from tests.factories import small_campaign_payload
from tests.worker.test_end_to_end import client, current_report, run_period, stack, wait_until  # noqa: F401

ECONOMICS = {"margin": 0.6, "unsubscribe_cost": 5.0, "level_costs": {"offer": {"half_price": {"share": 0.5}}}}


# SQLite only: a stack costs half a minute, and the service tests run the same paths on PostgreSQL too.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_profit_campaign_over_http_with_real_workers(stack):  # noqa: F811
    marketer, ingest, analyst = (client(stack, r) for r in ("marketer", "ingest", "analyst"))
    n = 400
    assert marketer.post("/segments", json={"name": "profit_e2e"}).status_code == 201
    r = marketer.post("/customers", json={"customers": [
        {"external_id": f"p{i}", "email": f"p{i}@example.com", "segment": "profit_e2e"} for i in range(n)]})
    assert r.status_code in (200, 201, 202), r.text
    payload = small_campaign_payload(factors={"tone": ["friendly"], "offer": ["free_drink", "half_price"]},
                                     segments=["profit_e2e"], objective="profit", economics=ECONOMICS,
                                     holdout_share=0.25)
    r = marketer.post("/campaigns", json=payload)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["economics"]["margin"] == 0.6
    assert marketer.post(f"/campaigns/{cid}/start").json()["status"] == "active"

    run_period(marketer, cid)
    rows = list(csv.DictReader(io.StringIO(marketer.get(f"/campaigns/{cid}/periods/1/sends.csv").text)))
    assert len(rows) == n
    # every 5th email brings an order of 30, whichever it was; one recipient unsubscribes (RFC 8058)
    ordered = rows[::5]
    batch = [e for x in ordered for e in (
        {"event_id": f"k{x['send_id']}", "type": "click", "send_id": int(x["send_id"])},
        {"event_id": f"o{x['send_id']}", "type": "conversion", "send_id": int(x["send_id"]), "revenue": 30.0})]
    assert ingest.post("/events", json={"events": batch}).status_code == 202
    outbox = stack["home"] / "outbox" / f"campaign-{cid}" / "period-1"
    msg = email.message_from_bytes(next(outbox.glob("*.eml")).read_bytes(), policy=email.policy.default)
    unsub = re.search(r"/u/[\w.]+", msg["List-Unsubscribe"]).group(0)
    assert httpx.post(stack["url"] + unsub, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    report = wait_until(lambda: (rep := current_report(analyst, cid))["events"]["applied"] >= len(batch) + 1
                        and rep, "the orders and the unsubscribe folded in")
    profit = report["profit"]
    assert profit["overall"]["control"]["unsubscribes"] + profit["overall"]["bandit"]["unsubscribes"] == 1
    assert profit["overall"]["bandit"]["sends"] + profit["overall"]["control"]["sends"] == n
    lf = profit["overall"]["lift"]
    assert lf["absolute_lift_ci95"][0] <= lf["absolute_lift"] <= lf["absolute_lift_ci95"][1]
    assert "profit_per_send" in analyst.get(f"/campaigns/{cid}/report.csv").text
    assert "Profit against the old email" in analyst.get(f"/campaigns/{cid}/report.html").text

    # Period 2: the workers allocate with the profit objective; the costly half-price email loses weight.
    run_period(marketer, cid)
    second = [s for s in marketer.get(f"/campaigns/{cid}/allocations").json() if s["period_number"] == 2]
    assert len(second) == 1
    snap = second[0]
    assert snap["diagnostics"]["objective"] == "profit"
    assert snap["diagnostics"]["model"] in ("hierarchical", "independent")  # hierarchical over one segment
    weights = dict(zip(snap["arms"], snap["weights"], strict=True))
    assert abs(sum(weights.values()) - 1) < 1e-9 and weights[0] > weights[1], weights
